"""Pending retries survive kill -9; the SSRF guard refuses 127.0.0.1 unless allowed."""

import pytest

from hookrun.dev.pytest_kafka import new_namespace
from hookrun.dev.receiver import Answer, Receiver
from tests.integration.notifier_support import (
    HEADER,
    WHSEC,
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

RUNS = 5


async def test_deliveries_waiting_in_backoff_survive_kill_9(kafka_bootstrap, tmp_path):
    # every run's first attempt fails; the retry is due 6 s later
    receiver = Receiver([WHSEC], respond=lambda r, n: Answer(500) if n == 0 else Answer(200))
    receiver.start()
    ns = new_namespace()
    config = (
        HEADER
        + "triggers:\n"
        + "".join(trigger(f"k{i}", receiver.url(f"/k{i}")) for i in range(RUNS))
        + "notifier: {allow_private_targets: true, timeout_s: 2.0, jitter: 0.0}\n"
    )
    env = {"HOOKRUN_NOTIFIER_RETRY_SCHEDULE_S": "0,6,1,1"}
    proc = start_notifier(tmp_path, kafka_bootstrap, ns, config, **env)
    try:
        runs = [make_run_finished(run_id=f"r-k{i}", trigger_id=f"k{i}") for i in range(RUNS)]
        await publish(kafka_bootstrap, ns, runs)
        for i in range(RUNS):
            await events_of(
                kafka_bootstrap,
                ns,
                f"r-k{i}",
                until=lambda f: of_type(f, "hookrun.delivery.attempted"),
            )
        assert all(len(receiver.on(f"/k{i}")) == 1 for i in range(RUNS))
        proc.kill()  # SIGKILL during the backoff: no shutdown hook runs

        proc = start_notifier(tmp_path, kafka_bootstrap, ns, config, name="notifier-2", **env)
        wait_for(
            lambda: all(len(receiver.on(f"/k{i}")) >= 2 for i in range(RUNS)),
            timeout_s=30,
            what="every retry after the restart",
        )
        for i in range(RUNS):
            first, second = receiver.on(f"/k{i}")[:2]
            assert first.headers["webhook-id"] == second.headers["webhook-id"]
            assert check_body(second)["id"] == f"r-k{i}"
            events = await events_of(
                kafka_bootstrap,
                ns,
                f"r-k{i}",
                until=lambda f: len(of_type(f, "hookrun.delivery.attempted")) >= 2,
            )
            attempts = of_type(events, "hookrun.delivery.attempted")
            # attempt 2, not a fresh attempt 1: the restart rebuilt the retry from the events
            assert [(a["attempt"], a["outcome"]) for a in attempts] == [
                (1, "failed"),
                (2, "succeeded"),
            ]
        # nothing is delivered twice after it succeeded
        assert all(len(receiver.on(f"/k{i}")) == 2 for i in range(RUNS))
    finally:
        proc.stop()
        receiver.stop()


async def test_the_guard_refuses_loopback_when_private_targets_are_not_allowed(
    kafka_bootstrap, tmp_path
):
    receiver = Receiver([WHSEC]).start()
    ns = new_namespace()
    config = HEADER + "triggers:\n" + trigger("ssrf", receiver.url("/ssrf"))
    proc = start_notifier(tmp_path, kafka_bootstrap, ns, config)
    try:
        await publish(kafka_bootstrap, ns, [make_run_finished(run_id="r-ssrf", trigger_id="ssrf")])
        events = await events_of(
            kafka_bootstrap, ns, "r-ssrf", until=lambda f: of_type(f, "hookrun.delivery.attempted")
        )
        [attempt] = of_type(events, "hookrun.delivery.attempted")
        assert attempt["outcome"] == "refused" and attempt["status_code"] is None
        assert "127.0.0.1" in attempt["error"]
        assert receiver.requests == []
    finally:
        proc.stop()
        receiver.stop()
