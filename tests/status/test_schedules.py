"""The admin API's schedules: listed with next fire times, paused and resumed as events."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient

from hookrun.config import parse_config
from hookrun.events.base import utcnow
from hookrun.events.schedules import (
    ScheduleFired,
    SchedulePaused,
    ScheduleResumed,
    scheduled_run_id,
)
from hookrun.gateway.adapters import FakeEventLog
from hookrun.status.adapters import FakeLogEnds
from hookrun.status.app import build
from hookrun.status.config import Settings
from tests.status.factories import CONFIG

TOKEN = "admin-secret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}

SCHEDULED = (
    CONFIG
    + """
  - id: hourly
    title: Every hour, on the hour
    conditions: [{type: static_secret, header: X-Token, secret: tok}]
    actions: [{action: run_execution, step: noop}]
    schedule: {cron: "0 * * * *", timezone: Europe/Helsinki, misfire_grace_s: 300}
  - id: quiet
    title: Scheduled but disabled
    enabled: false
    actions: [{action: run_execution, step: noop}]
    schedule: {cron: "*/5 * * * *"}
"""
)


@pytest.fixture
def log() -> FakeEventLog:
    return FakeEventLog()


@pytest.fixture
def client(tmp_path, log):
    settings = Settings(
        hookrun_admin_token=TOKEN,
        hookrun_database_url=f"sqlite:///{tmp_path / 'status.db'}",
    )
    app = build(settings, parse_config(SCHEDULED, "test.yaml"), event_log=log, ends=FakeLogEnds())
    with TestClient(app) as c:
        yield c


def next_hour(now: datetime) -> datetime:
    return now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)


def iso(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


class TestList:
    def test_lists_every_schedule_with_its_next_fire_time(self, client) -> None:
        before = utcnow()
        body = client.get("/api/v1/schedules", headers=AUTH).json()
        hourly, off = body["schedules"]
        assert hourly["trigger_id"] == "hourly"
        assert (hourly["cron"], hourly["timezone"], hourly["misfire_grace_s"]) == (
            "0 * * * *",
            "Europe/Helsinki",
            300,
        )
        assert hourly["state"] == "active"
        assert hourly["next_fire_at"] in {iso(next_hour(before)), iso(next_hour(utcnow()))}
        assert hourly["last_fired"] is None
        assert (off["trigger_id"], off["state"], off["next_fire_at"]) == ("quiet", "disabled", None)

    def test_shows_the_last_firing(self, client, log) -> None:
        due = next_hour(utcnow()) - timedelta(hours=1)
        run_id = scheduled_run_id("hourly", due)
        fired = ScheduleFired(
            trigger_id="hourly", due_at=due, run_id=run_id, config_version="v", fired_at=due
        )
        log.events.append(fired)
        body = client.get("/api/v1/schedules/hourly", headers=AUTH).json()
        assert body["last_fired"] == {"due_at": iso(due), "run_id": run_id, "fired_at": iso(due)}

    def test_needs_the_admin_token(self, client) -> None:
        assert client.get("/api/v1/schedules").status_code == 401

    def test_a_trigger_without_a_schedule_is_404(self, client) -> None:
        for path in ("/api/v1/schedules/tok", "/api/v1/schedules/nope/pause"):
            call = client.get if not path.endswith("pause") else client.post
            answer = call(path, headers=AUTH)
            assert answer.status_code == 404
            assert answer.json() == {"error": "schedule not found"}


class TestPauseAndResume:
    def test_pause_appends_one_event_and_shows_paused(self, client, log) -> None:
        first = client.post("/api/v1/schedules/hourly/pause", headers=AUTH)
        again = client.post("/api/v1/schedules/hourly/pause", headers=AUTH)
        assert first.status_code == again.status_code == 200
        assert (first.json()["state"], first.json()["next_fire_at"]) == ("paused", None)
        assert [type(e) for e in log.events] == [SchedulePaused]

    def test_resume_counts_from_now(self, client, log) -> None:
        client.post("/api/v1/schedules/hourly/pause", headers=AUTH)
        before = datetime.now(UTC)
        body = client.post("/api/v1/schedules/hourly/resume", headers=AUTH).json()
        assert body["state"] == "active"
        resumed = log.events[-1]
        assert isinstance(resumed, ScheduleResumed)
        assert resumed.since >= before
        assert body["next_fire_at"] == iso(next_hour(resumed.since))

    def test_resuming_an_active_schedule_appends_nothing(self, client, log) -> None:
        assert client.post("/api/v1/schedules/hourly/resume", headers=AUTH).status_code == 200
        assert log.events == []

    def test_kafka_down_is_503_with_retry_after(self, client, log) -> None:
        log.down = True
        answer = client.post("/api/v1/schedules/hourly/pause", headers=AUTH)
        assert answer.status_code == 503
        assert "Retry-After" in answer.headers
