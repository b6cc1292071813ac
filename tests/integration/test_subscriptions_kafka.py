"""Subscriptions end to end: the notifier and the status service as real processes on the real
broker, real receivers on 127.0.0.1, the admin API over HTTP."""

from __future__ import annotations

import httpx
import pytest

from hookrun.dev.pytest_kafka import new_namespace
from hookrun.dev.receiver import Answer, Receiver
from hookrun.events.subscriptions import subscription_id
from tests.integration.notifier_support import (
    HEADER,
    WHSEC,
    publish,
    start_notifier,
    start_status,
    trigger,
    wait_for,
)
from tests.notifier.conftest import make_run_finished

pytestmark = pytest.mark.kafka

TOKEN = "admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def respond(request, count):
    if request.path == "/gone":
        return Answer(410, body=b"gone")
    return Answer(200) if request.verified else Answer(401)


@pytest.fixture(scope="module")
def system(kafka_bootstrap, tmp_path_factory):
    receiver = Receiver([WHSEC], respond=respond).start()
    ns = new_namespace()
    url = receiver.url
    config = (
        HEADER
        + "triggers:\n"
        + trigger("gone", url("/gone"))
        + trigger("ok", url("/ok"))
        + "notifier: {allow_private_targets: true, timeout_s: 1.0, jitter: 0.0}\n"
    )
    tmp = tmp_path_factory.mktemp("subscriptions")
    notifier = start_notifier(
        tmp, kafka_bootstrap, ns, config, HOOKRUN_NOTIFIER_RETRY_SCHEDULE_S="0,0.5"
    )
    status, base = start_status(tmp, kafka_bootstrap, ns, config, TOKEN)
    yield kafka_bootstrap, ns, receiver, base
    status.stop()
    notifier.stop()
    receiver.stop()


def subscriptions(base: str) -> dict[str, dict]:
    r = httpx.get(f"{base}/api/v1/subscriptions", headers=AUTH, timeout=10)
    assert r.status_code == 200, r.text
    return {s["id"]: s for s in r.json()["subscriptions"]}


async def test_the_list_shows_a_410_disabled_subscription_and_each_ones_last_attempt(system):
    bootstrap, ns, receiver, base = system
    gone, ok = (
        subscription_id("gone", receiver.url("/gone")),
        subscription_id("ok", receiver.url("/ok")),
    )
    await publish(
        bootstrap,
        ns,
        [
            make_run_finished(run_id="r-list-gone", trigger_id="gone"),
            make_run_finished(run_id="r-list-ok", trigger_id="ok"),
        ],
    )
    wait_for(lambda: receiver.on("/gone") and receiver.on("/ok"), what="both deliveries")
    wait_for(
        lambda: (
            subscriptions(base)[gone]["state"] == "disabled"
            and subscriptions(base)[ok]["last_attempt"] is not None
        ),
        what="the status service to follow the subscriptions topic and the attempts",
    )
    listed = subscriptions(base)
    assert listed[gone]["disabled"]["cause"] == "gone"
    assert listed[gone]["last_attempt"]["status_code"] == 410
    assert listed[ok]["state"] == "enabled"
    assert listed[ok]["recent"]["success_rate"] == 1.0
    assert listed[ok]["last_attempt"]["outcome"] == "succeeded"
