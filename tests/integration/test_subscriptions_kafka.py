"""Subscriptions end to end: the notifier and the status service as real processes on the real
broker, real receivers on 127.0.0.1, the admin API over HTTP."""

from __future__ import annotations

import time

import httpx
import pytest
from cryptography.fernet import Fernet
from standardwebhooks import Webhook

from hookrun.dev.events import read_events
from hookrun.dev.pytest_kafka import new_namespace
from hookrun.dev.receiver import Answer, Receiver
from hookrun.events import topics
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
from tests.notifier.conftest import make_run_finished, make_whsk, verify_v1a
from tests.status.factories import launched

pytestmark = pytest.mark.kafka

TOKEN = "admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


WHSK, WHPK = make_whsk()
#: Both services seal and unseal the secrets of subscriptions made through the API with it.
SECRETS_KEY = Fernet.generate_key().decode()


def respond(request, count):
    if request.path == "/gone":
        return Answer(410, body=b"gone")
    if request.path == "/dead":
        return Answer(503, body=b"down")
    if request.path == "/made":
        return Answer(200)
    if request.path == "/later":  # retry in an hour
        return Answer(503, headers={"Retry-After": "3600"}, body=b"later")
    if request.path == "/v1a":
        return Answer(200) if verify_v1a(WHPK, request.body, request.headers) else Answer(401)
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
        + trigger("dead", url("/dead"))
        + trigger("signed", url("/v1a"), secrets=f'"{WHSK}"')
        + trigger("filtered", url("/every"))
        + f'      - {{url: "{url("/failures")}", secret: "{WHSEC}", statuses: [FAILURE, TIMED_OUT],'
        + ' headers: {X-Env: "${env:HOOK_ENV}"}}\n'
        + "notifier: {allow_private_targets: true, timeout_s: 1.0, jitter: 0.0,"
        + " disable_after_exhausted: 2}\n"
    )
    tmp = tmp_path_factory.mktemp("subscriptions")
    notifier = start_notifier(
        tmp,
        kafka_bootstrap,
        ns,
        config,
        HOOKRUN_NOTIFIER_RETRY_SCHEDULE_S="0,0.5",
        HOOK_ENV="prod",
        HOOKRUN_SECRETS_KEY=SECRETS_KEY,
    )
    status, base = start_status(
        tmp, kafka_bootstrap, ns, config, TOKEN, HOOK_ENV="prod", HOOKRUN_SECRETS_KEY=SECRETS_KEY
    )
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


async def test_a_filtered_subscription_gets_only_its_statuses_with_its_headers(system):
    bootstrap, ns, receiver, _ = system
    runs = [
        make_run_finished(run_id="r-filter-ok", trigger_id="filtered"),
        make_run_finished(ok=False, run_id="r-filter-failed", trigger_id="filtered"),
        make_run_finished(
            ok=False, run_id="r-filter-timeout", trigger_id="filtered", status="TIMED_OUT"
        ),
    ]
    await publish(bootstrap, ns, runs)
    wait_for(lambda: len(receiver.on("/every")) == 3, what="every run at the unfiltered one")
    wait_for(lambda: len(receiver.on("/failures")) == 2, what="the failures at the filtered one")
    failures = receiver.on("/failures")
    assert sorted(r.json()["id"] for r in failures) == ["r-filter-failed", "r-filter-timeout"]
    # the header's value came from the notifier's environment, beside a valid signature
    assert all(r.headers["x-env"] == "prod" and r.verified for r in failures)
    assert all("x-env" not in r.headers for r in receiver.on("/every"))


async def test_a_whsk_subscription_signs_v1a_that_its_whpk_key_verifies(system):
    bootstrap, ns, receiver, _ = system
    await publish(bootstrap, ns, [make_run_finished(run_id="r-v1a", trigger_id="signed")])
    wait_for(lambda: receiver.on("/v1a"), what="the v1a delivery")
    [request] = receiver.on("/v1a")
    assert request.headers["webhook-signature"].startswith("v1a,")
    assert verify_v1a(WHPK, request.body, request.headers)
    assert not request.verified  # no whsec_ secret: no v1 signature at all


def enable(base: str, sid: str) -> httpx.Response:
    return httpx.post(f"{base}/api/v1/subscriptions/{sid}/enable", headers=AUTH, timeout=10)


async def test_a_410_disabled_subscription_enabled_again_gets_the_next_run(system):
    bootstrap, ns, receiver, base = system
    gone = subscription_id("gone", receiver.url("/gone"))
    # the first test disabled it; make sure, in case this one runs alone
    if subscriptions(base)[gone]["state"] == "enabled":
        await publish(bootstrap, ns, [make_run_finished(run_id="r-gone-0", trigger_id="gone")])
        wait_for(lambda: subscriptions(base)[gone]["state"] == "disabled", what="the 410")
    before = len(receiver.on("/gone"))
    r = enable(base, gone)
    assert (r.status_code, r.json()["state"]) == (200, "enabled")
    await publish(bootstrap, ns, [make_run_finished(run_id="r-gone-again", trigger_id="gone")])
    wait_for(
        lambda: len(receiver.on("/gone")) == before + 1, what="the notifier to follow the enable"
    )
    assert receiver.on("/gone")[-1].json()["id"] == "r-gone-again"


async def test_exhausted_deliveries_in_a_row_disable_a_subscription_until_enabled(system):
    bootstrap, ns, receiver, base = system
    dead = subscription_id("dead", receiver.url("/dead"))
    for n in (1, 2):
        await publish(bootstrap, ns, [make_run_finished(run_id=f"r-dead-{n}", trigger_id="dead")])
        # each delivery: two attempts (the schedule 0, 0.5), then exhausted
        wait_for(lambda n=n: len(receiver.on("/dead")) == 2 * n, what=f"delivery {n} exhausted")
    wait_for(lambda: subscriptions(base)[dead]["state"] == "disabled", what="the failing disable")
    listed = subscriptions(base)[dead]
    assert listed["disabled"]["cause"] == "failing"
    assert "2 deliveries in a row exhausted" in listed["disabled"]["reason"]
    assert listed["exhausted_in_row"] == 2 and listed["failing_since"] is not None
    assert listed["recent"]["success_rate"] == 0.0
    # disabled: a third run is not attempted
    await publish(bootstrap, ns, [make_run_finished(run_id="r-dead-3", trigger_id="dead")])
    await publish(bootstrap, ns, [make_run_finished(run_id="r-dead-probe", trigger_id="ok")])
    wait_for(lambda: any(r.json()["id"] == "r-dead-probe" for r in receiver.on("/ok")))
    assert len(receiver.on("/dead")) == 4
    # enabled again, its failures are forgotten
    assert enable(base, dead).json()["exhausted_in_row"] == 0
    await publish(bootstrap, ns, [make_run_finished(run_id="r-dead-4", trigger_id="dead")])
    wait_for(lambda: len(receiver.on("/dead")) >= 5, what="the enabled subscription's attempt")


async def test_a_subscription_made_rotated_and_removed_through_the_api_without_a_restart(system):
    bootstrap, ns, receiver, base = system
    r = httpx.post(
        f"{base}/api/v1/subscriptions",
        json={"trigger_id": "ok", "url": receiver.url("/made"), "headers": {"X-Made": "yes"}},
        headers=AUTH,
        timeout=10,
    )
    assert r.status_code == 201, r.text
    made = r.json()
    await publish(bootstrap, ns, [make_run_finished(run_id="r-made-1", trigger_id="ok")])
    wait_for(lambda: receiver.on("/made"), what="the notifier to follow the new subscription")
    [first] = receiver.on("/made")
    assert first.json()["id"] == "r-made-1" and first.headers["x-made"] == "yes"
    Webhook(made["secret"]).verify(first.body, first.headers)
    # on the topic the secret is sealed: a reader of the topic without the key cannot sign
    records = await read_events(
        bootstrap,
        topics.named(topics.SUBSCRIPTIONS, ns),
        timeout_s=5,
        until=lambda evs: any(e.headers["ce_type"] == "hookrun.subscription.saved" for e in evs),
    )
    [saved] = [e.data() for e in records if e.headers["ce_type"] == "hookrun.subscription.saved"]
    assert saved["secrets"][0]["secret"].startswith("sealed:")
    assert made["secret"] not in str(saved)

    rotated = httpx.post(
        f"{base}/api/v1/subscriptions/{made['id']}/rotate-secret", headers=AUTH, timeout=10
    ).json()
    await publish(bootstrap, ns, [make_run_finished(run_id="r-made-2", trigger_id="ok")])
    wait_for(lambda: len(receiver.on("/made")) == 2, what="the delivery after the rotation")
    second = receiver.on("/made")[1]
    # both secrets sign during the overlap: a receiver holding either verifies
    assert len(second.headers["webhook-signature"].split(" ")) == 2
    Webhook(rotated["secret"]).verify(second.body, second.headers)
    Webhook(made["secret"]).verify(second.body, second.headers)

    r = httpx.delete(f"{base}/api/v1/subscriptions/{made['id']}", headers=AUTH, timeout=10)
    assert r.status_code == 204
    await publish(bootstrap, ns, [make_run_finished(run_id="r-made-3", trigger_id="ok")])
    wait_for(lambda: any(r.json()["id"] == "r-made-3" for r in receiver.on("/ok")))
    time.sleep(0.5)
    assert len(receiver.on("/made")) == 2
    assert made["id"] not in subscriptions(base)


async def test_a_waiting_retry_the_patched_statuses_leave_out_is_canceled(system):
    bootstrap, ns, receiver, base = system
    r = httpx.post(
        f"{base}/api/v1/subscriptions",
        json={"trigger_id": "ok", "url": receiver.url("/later")},
        headers=AUTH,
        timeout=10,
    )
    assert r.status_code == 201, r.text
    sid = r.json()["id"]
    await publish(
        bootstrap,
        ns,
        [launched("ok", "r-later-1"), make_run_finished(run_id="r-later-1", trigger_id="ok")],
    )
    wait_for(lambda: receiver.on("/later"), what="the first attempt (its retry waits an hour)")
    r = httpx.patch(
        f"{base}/api/v1/subscriptions/{sid}",
        json={"statuses": ["FAILURE"]},
        headers=AUTH,
        timeout=10,
    )
    assert r.status_code == 200, r.text

    def delivery() -> dict | None:
        run = httpx.get(f"{base}/api/v1/runs/r-later-1", headers=AUTH, timeout=10).json()
        return next((d for d in run.get("deliveries", []) if d["subscription_id"] == sid), None)

    wait_for(lambda: (delivery() or {}).get("state") == "canceled", what="the retry to be canceled")
    canceled = delivery()
    assert canceled["attempt_count"] == 1 and canceled["next_attempt_at"] is None
    assert "no longer include SUCCESS" in canceled["last_error"]
    assert len(receiver.on("/later")) == 1
    httpx.delete(f"{base}/api/v1/subscriptions/{sid}", headers=AUTH, timeout=10)


def test_config_file_subscriptions_are_read_only(system):
    _, _, receiver, base = system
    ok = subscription_id("ok", receiver.url("/ok"))
    r = httpx.patch(
        f"{base}/api/v1/subscriptions/{ok}",
        json={"statuses": ["FAILURE"]},
        headers=AUTH,
        timeout=10,
    )
    assert r.status_code == 409 and "config file" in r.json()["error"]
