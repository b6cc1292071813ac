"""The notifier as a real process against the real broker and real receivers on 127.0.0.1."""

import time

import pytest

from hookrun.dev.events import read_events
from hookrun.dev.pytest_kafka import new_namespace
from hookrun.dev.receiver import Answer, Receiver
from hookrun.events import topics
from hookrun.events.notifications import RedeliveryRequested
from tests.integration.notifier_support import (
    HEADER,
    WHSEC,
    WHSEC_OLD,
    check_body,
    events_of,
    of_type,
    publish,
    start_notifier,
    trigger,
    wait_for,
)
from tests.notifier.conftest import make_run_finished

pytestmark = pytest.mark.kafka

HANG_S = 3.0


def respond(request, count):
    if request.path == "/flaky":
        return Answer(500, body=b"try later") if count == 0 else Answer(200)
    if request.path == "/gone":
        return Answer(410, body=b"gone")
    if request.path == "/dead":
        return Answer(503, body=b"down for good")
    if request.path == "/hang":
        return Answer(200, delay_s=HANG_S)
    return Answer(200) if request.verified else Answer(401)


@pytest.fixture(scope="module")
def system(kafka_bootstrap, tmp_path_factory):
    receiver = Receiver([WHSEC], respond=respond).start()
    ns = new_namespace()
    url = receiver.url
    config = (
        HEADER
        + "triggers:\n"
        + trigger("flaky", url("/flaky"))
        + trigger("gone", url("/gone"))
        + trigger("dead", url("/dead"))
        + trigger("ok", url("/ok"), url("/rotated"), secrets=f'["{WHSEC}", "{WHSEC_OLD}"]')
        + trigger("iso", url("/hang"), url("/fast"))
        + "notifier: {allow_private_targets: true, timeout_s: 1.0, jitter: 0.0}\n"
    )
    proc = start_notifier(
        tmp_path_factory.mktemp("notifier"),
        kafka_bootstrap,
        ns,
        config,
        HOOKRUN_NOTIFIER_RETRY_SCHEDULE_S="0,0.5,0.5",
    )
    yield kafka_bootstrap, ns, receiver
    proc.stop()
    receiver.stop()


async def test_a_subscriber_answering_500_then_200_gets_it_on_the_retry(system):
    bootstrap, ns, receiver = system
    await publish(bootstrap, ns, [make_run_finished(run_id="r-flaky", trigger_id="flaky")])
    wait_for(lambda: len(receiver.on("/flaky")) == 2, what="two attempts")
    first, second = receiver.on("/flaky")
    assert check_body(first) == check_body(second)
    assert first.headers["webhook-id"] == second.headers["webhook-id"]
    assert second.at - first.at >= 0.4  # the schedule's 0.5 s wait
    events = await events_of(
        bootstrap, ns, "r-flaky", until=lambda f: len(of_type(f, "hookrun.delivery.attempted")) == 2
    )
    one, two = of_type(events, "hookrun.delivery.attempted")
    assert (one["outcome"], one["status_code"], one["response_excerpt"]) == (
        "failed",
        500,
        "try later",
    )
    assert one["next_attempt_at"] is not None and one["duration_ms"] >= 0
    assert (two["outcome"], two["status_code"], two["attempt"]) == ("succeeded", 200, 2)
    assert two["next_attempt_at"] is None


async def test_every_secret_of_a_rotation_signs(system):
    bootstrap, ns, receiver = system
    await publish(bootstrap, ns, [make_run_finished(run_id="r-rot", trigger_id="ok")])
    wait_for(lambda: receiver.on("/rotated"), what="delivery")
    [request] = receiver.on("/rotated")
    check_body(request)
    assert len(request.headers["webhook-signature"].split(" ")) == 2
    assert Receiver([WHSEC_OLD]).verify(request.headers, request.body)


async def test_a_410_disables_the_subscription(system):
    bootstrap, ns, receiver = system
    await publish(bootstrap, ns, [make_run_finished(run_id="r-gone-1", trigger_id="gone")])
    wait_for(lambda: receiver.on("/gone"), what="the 410")
    events = await events_of(
        bootstrap, ns, "r-gone-1", until=lambda f: of_type(f, "hookrun.delivery.attempted")
    )
    [attempt] = of_type(events, "hookrun.delivery.attempted")
    assert attempt["outcome"] == "gone" and attempt["next_attempt_at"] is None

    def disabled_ones(events):
        return [
            e.data()["trigger_id"]
            for e in events
            if e.headers["ce_type"] == "hookrun.subscription.disabled"
        ]

    # the topic also holds other subscriptions' health records
    state = await read_events(
        bootstrap, topics.named(topics.SUBSCRIPTIONS, ns), timeout_s=5, until=disabled_ones
    )
    assert disabled_ones(state) == ["gone"]
    # the next run is not sent to it
    await publish(bootstrap, ns, [make_run_finished(run_id="r-gone-2", trigger_id="gone")])
    await publish(bootstrap, ns, [make_run_finished(run_id="r-gone-probe", trigger_id="ok")])
    wait_for(lambda: any(r.json()["id"] == "r-gone-probe" for r in receiver.on("/ok")))
    time.sleep(0.5)
    assert len(receiver.on("/gone")) == 1


async def test_an_exhausted_delivery_is_recorded(system):
    bootstrap, ns, receiver = system
    await publish(bootstrap, ns, [make_run_finished(run_id="r-dead", trigger_id="dead")])
    events = await events_of(
        bootstrap, ns, "r-dead", until=lambda f: of_type(f, "hookrun.delivery.exhausted")
    )
    attempts = of_type(events, "hookrun.delivery.attempted")
    [exhausted] = of_type(events, "hookrun.delivery.exhausted")
    assert [a["attempt"] for a in attempts] == [1, 2, 3]
    assert all(a["status_code"] == 503 for a in attempts)
    assert exhausted["attempts"] == 3 and exhausted["last_error"] == "HTTP 503"
    assert len(receiver.on("/dead")) == 3


async def test_a_redelivery_request_delivers_again_with_the_same_webhook_id(system):
    bootstrap, ns, receiver = system
    await publish(bootstrap, ns, [make_run_finished(run_id="r-again", trigger_id="ok")])
    mine = lambda: [r for r in receiver.on("/ok") if r.json()["id"] == "r-again"]  # noqa: E731
    wait_for(lambda: len(mine()) == 1, what="first delivery")
    await publish(bootstrap, ns, [RedeliveryRequested(run_id="r-again")])
    wait_for(lambda: len(mine()) == 2, what="redelivery")
    first, again = mine()
    check_body(again)
    assert first.headers["webhook-id"] == again.headers["webhook-id"]


async def test_a_hanging_subscriber_does_not_delay_a_healthy_one(system):
    bootstrap, ns, receiver = system
    runs = [make_run_finished(run_id=f"r-iso-{n}", trigger_id="iso") for n in range(10)]
    await publish(bootstrap, ns, runs)
    wait_for(lambda: len(receiver.on("/fast")) >= 10, timeout_s=10, what="healthy deliveries")
    wait_for(lambda: receiver.on("/hang"), what="the hanging subscriber's first request")
    latest = max(r.at for r in receiver.on("/fast"))
    first_hang = min(r.at for r in receiver.on("/hang"))
    # The hanging lane holds its attempts until the 1 s timeout; every healthy delivery lands
    # well before the first of those times out.
    assert latest - first_hang < 0.5, latest - first_hang
    for request in receiver.on("/fast"):
        check_body(request)
