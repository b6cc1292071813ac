"""What the owner of a schedule appends at a tick (plan), and how a schedule's events fold."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import orjson

from hookrun.config import HookrunConfig, parse_config
from hookrun.events.runs import TriggerLaunched
from hookrun.events.schedules import (
    ScheduleArmed,
    ScheduleFired,
    SchedulePaused,
    ScheduleResumed,
    ScheduleSkipped,
    ScheduleState,
    scheduled_run_id,
)
from hookrun.runner.schedules import plan

CONFIG = """
project: {id: p-1, slug: demo, name: Demo}
organization: {id: o-1, slug: acme, title: Acme}
environment: {id: e-1, slug: dev, type: DEVELOPMENT}
steps:
  - {name: noop, command: ["true"]}
triggers:
  - id: daily
    title: Every day at nine in Helsinki
    actions: [{action: run_execution, step: noop}]
    schedule: {cron: "0 9 * * *", timezone: Europe/Helsinki, misfire_grace_s: 0}
  - id: sleeping
    title: Disabled
    enabled: false
    actions: [{action: run_execution, step: noop}]
    schedule: {cron: "0 9 * * *"}
"""

#: 09:00 in Helsinki on a winter day is 07:00 UTC.
DUE = datetime(2026, 12, 7, 7, tzinfo=UTC)


def config() -> HookrunConfig:
    return parse_config(CONFIG, "hookrun.yaml")


def planned(trigger_index: int, state: ScheduleState, now: datetime) -> list:
    trigger = config().triggers[trigger_index]
    assert trigger.schedule is not None
    return plan(trigger, trigger.schedule, state, now, "v1")


def armed(since: datetime) -> ScheduleState:
    state = ScheduleState("daily")
    state.apply(ScheduleArmed(trigger_id="daily", since=since))
    return state


class TestPlan:
    def test_a_schedule_seen_first_is_armed_from_now(self) -> None:
        [event] = planned(0, ScheduleState("daily"), DUE)
        assert isinstance(event, ScheduleArmed) and event.since == DUE

    def test_nothing_is_due_before_the_due_time(self) -> None:
        assert planned(0, armed(DUE - timedelta(hours=1)), DUE - timedelta(seconds=1)) == []

    def test_a_due_time_a_moment_late_fires_even_without_grace(self) -> None:
        fired, launched = planned(0, armed(DUE - timedelta(hours=1)), DUE + timedelta(seconds=2))
        assert isinstance(fired, ScheduleFired) and isinstance(launched, TriggerLaunched)
        assert fired.due_at == DUE and fired.skipped_since is None
        assert fired.run_id == launched.run_id == scheduled_run_id("daily", DUE)
        assert launched.schedule is not None and launched.schedule.due_at == DUE
        assert launched.request.method == "SCHEDULE"
        assert launched.traceparent is not None, "the run starts a trace"
        assert fired.traceparent == launched.traceparent
        body = orjson.loads(base64.b64decode(launched.request.body_b64))
        assert body == {
            "schedule": {
                "due_at": "2026-12-07T07:00:00Z",
                "cron": "0 9 * * *",
                "timezone": "Europe/Helsinki",
            }
        }

    def test_past_the_grace_it_is_skipped(self) -> None:
        [skipped] = planned(0, armed(DUE - timedelta(days=3)), DUE + timedelta(minutes=1))
        assert isinstance(skipped, ScheduleSkipped)
        assert (skipped.first_due_at, skipped.due_at) == (DUE - timedelta(days=2), DUE)

    def test_a_disabled_trigger_fires_nothing(self) -> None:
        state = ScheduleState("sleeping")
        state.apply(ScheduleArmed(trigger_id="sleeping", since=DUE - timedelta(hours=1)))
        assert planned(1, state, DUE) == []

    def test_a_paused_schedule_fires_nothing(self) -> None:
        state = armed(DUE - timedelta(hours=1))
        state.apply(SchedulePaused(trigger_id="daily"))
        assert planned(0, state, DUE) == []


class TestFold:
    def fired(self, due: datetime) -> ScheduleFired:
        return ScheduleFired(
            trigger_id="daily",
            due_at=due,
            run_id=scheduled_run_id("daily", due),
            config_version="v1",
            fired_at=due,
        )

    def test_a_firing_read_after_a_pause_keeps_it_and_asks_for_it_again(self) -> None:
        state = armed(DUE - timedelta(hours=1))
        state.apply(SchedulePaused(trigger_id="daily"))
        state.apply(self.fired(DUE))
        assert state.paused and state.overtaken and state.anchor == DUE
        [again] = planned(0, state, DUE + timedelta(seconds=1))
        assert isinstance(again, SchedulePaused)
        state.apply(again)
        assert state.paused and not state.overtaken

    def test_resume_moves_the_anchor_to_its_time_and_never_back(self) -> None:
        state = armed(DUE - timedelta(hours=1))
        state.apply(SchedulePaused(trigger_id="daily"))
        state.apply(ScheduleResumed(trigger_id="daily", since=DUE + timedelta(days=2)))
        assert not state.paused and state.anchor == DUE + timedelta(days=2)
        # an older firing read late does not move it back
        state.apply(self.fired(DUE))
        assert state.anchor == DUE + timedelta(days=2)
