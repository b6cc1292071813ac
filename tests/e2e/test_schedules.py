"""A scheduled trigger in the whole system: its runs, their notifications, pause and resume
through the gateway's admin API."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import httpx
import pytest

from hookrun.dev.pytest_kafka import new_namespace
from hookrun.dev.receiver import Receiver
from hookrun.events.schedules import scheduled_run_id
from tests.e2e.support import TOKEN, System, config_text, verified_notification, wait_for

pytestmark = pytest.mark.e2e


def with_schedule(receiver: Receiver) -> str:
    url = receiver.url("/hooks/tick")
    return config_text(receiver) + (
        "  - id: tick\n"
        "    title: Every two seconds\n"
        '    conditions: [{type: static_secret, header: X-Token, secret: "${env:HOOKRUN_E2E_TOKEN}"}]\n'
        "    actions: [{action: run_execution, step: ok, payload_input: payload}]\n"
        '    schedule: {cron: "* * * * * */2", timezone: Europe/Helsinki, misfire_grace_s: 0}\n'
        f'    notifications: [{{url: "{url}", secret: "${{env:HOOKRUN_E2E_WHSEC}}"}}]\n'
    )


@pytest.fixture(scope="module")
def system(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    started = System(
        kafka_bootstrap,
        tmp_path_factory.mktemp("e2e-schedules"),
        config=with_schedule,
        namespace=new_namespace("e2e"),
        env={"HOOKRUN_SCHEDULE_TICK_S": "0.2"},
    )
    try:
        yield started.start()
    finally:
        started.stop()


def ticks(system: System) -> list[dict[str, Any]]:
    return [r.json() for r in list(system.receiver.requests) if r.path.startswith("/hooks/tick")]


def parse(at: str) -> datetime:
    return datetime.fromisoformat(at.replace("Z", "+00:00"))


def test_a_scheduled_run_is_an_ordinary_run_naming_its_due_time(system: System) -> None:
    listed = system.admin("GET", "/schedules")
    assert listed.status_code == 200, listed.text
    [tick] = [s for s in listed.json()["schedules"] if s["trigger_id"] == "tick"]
    assert tick["state"] == "active" and tick["next_fire_at"] is not None

    wait_for(lambda: ticks(system), 60, f"a scheduled run's notification\n{system.logs()}")
    [request] = [r for r in list(system.receiver.requests) if r.path.startswith("/hooks/tick")][:1]
    body = verified_notification(request)
    due = body["invocation"]["context"]["schedule"]["due_at"]
    assert body["job"]["id"] == "tick"
    assert body["status"] == "SUCCESS", body
    assert body["id"] == scheduled_run_id("tick", parse(due))
    assert body["invocation"]["payload"]["schedule"]["cron"] == "* * * * * */2"

    # Run info of a scheduled run: the trigger's conditions still guard it.
    path = "/api/v0/launch/tick/run/"
    answer = system.http.get(path, params={"run_id": body["id"]}, headers={"X-Token": TOKEN})
    assert (answer.status_code, answer.json()["status"]) == (200, "completed")
    assert system.http.get(path, params={"run_id": body["id"]}).status_code == 400


def test_pause_stops_the_runs_and_resume_starts_at_the_next_due_time(system: System) -> None:
    paused = system.admin("POST", "/schedules/tick/pause")
    assert paused.status_code == 200, paused.text
    assert (paused.json()["state"], paused.json()["next_fire_at"]) == ("paused", None)
    time.sleep(3)  # runs fired before the pause finish and notify meanwhile
    before = len(ticks(system))
    time.sleep(4)
    assert len(ticks(system)) == before, "a paused schedule started runs"

    resumed = system.admin("POST", "/schedules/tick/resume")
    assert resumed.status_code == 200, resumed.text
    assert resumed.json()["state"] == "active"
    at = parse(resumed.json()["next_fire_at"])
    wait_for(lambda: len(ticks(system)) > before, 60, "a run after the resume")
    first = min(
        parse(b["invocation"]["context"]["schedule"]["due_at"]) for b in ticks(system)[before:]
    )
    assert first >= at, "times missed while paused were made up"
    listed = system.admin("GET", "/schedules/tick").json()
    assert listed["last_fired"]["due_at"] is not None


def test_the_runner_counts_the_due_times_it_fired(system: System) -> None:
    wait_for(lambda: ticks(system), 60, "a scheduled run")
    runner = system.procs[1]
    assert runner.health_url is not None
    text = httpx.get(runner.health_url.replace("/healthz", "/metrics"), timeout=10).text
    [line] = [
        line
        for line in text.splitlines()
        if line.startswith('hookrun_schedule_due_times_total{outcome="fired",trigger="tick"}')
    ]
    assert float(line.split()[-1]) >= 1
