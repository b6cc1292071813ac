"""The admin API's schedules: each configured schedule's state, next fire time, pause and resume.

The state is folded from hookrun.schedules, which every status instance follows whole; pause
and resume are events on it, so every instance and the runner that fires the schedule agree,
and a restart changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, Literal

from hookrun.config import Trigger
from hookrun.config.model.schedules import Schedule
from hookrun.events.base import utcnow
from hookrun.events.kafka import KafkaUnavailable
from hookrun.events.schedules import SchedulePaused, ScheduleResumed, ScheduleState
from hookrun.status.handlers import ApiError, Deps, appended, unavailable

State = Literal["active", "paused", "disabled"]


def _iso(at: datetime | None) -> str | None:
    return None if at is None else at.isoformat().replace("+00:00", "Z")


def view(trigger: Trigger, state: ScheduleState | None, now: datetime) -> dict[str, Any]:
    """One schedule as the admin API shows it."""
    schedule = trigger.schedule
    assert schedule is not None
    status: State = (
        "paused"
        if state is not None and state.paused
        else "active"
        if trigger.enabled
        else "disabled"
    )
    fired = state.last_fired if state is not None else None
    skipped = state.last_skipped if state is not None else None
    return {
        "trigger_id": trigger.id,
        "cron": schedule.cron,
        "timezone": schedule.timezone,
        "misfire_grace_s": schedule.misfire_grace_s,
        "state": status,
        "next_fire_at": _iso(next_fire(schedule, state, now)) if status == "active" else None,
        "last_fired": None
        if fired is None
        else {
            "due_at": _iso(fired.due_at),
            "run_id": fired.run_id,
            "fired_at": _iso(fired.fired_at),
        },
        "last_skipped": None
        if skipped is None
        else {"first_due_at": _iso(skipped.first_due_at), "due_at": _iso(skipped.due_at)},
    }


def next_fire(schedule: Schedule, state: ScheduleState | None, now: datetime) -> datetime:
    """The next due time from now on (a resume's ``since`` counts when it is later)."""
    anchor = state.anchor if state is not None else None
    return schedule.next_after(now if anchor is None or anchor < now else anchor)


async def _states(deps: Deps) -> dict[str, ScheduleState]:
    try:
        return await deps.schedules.states()
    except KafkaUnavailable as exc:
        raise unavailable("schedules", deps) from exc


def _scheduled(trigger_id: str, deps: Deps) -> Trigger:
    trigger = deps.triggers.get(trigger_id)
    if trigger is None or trigger.schedule is None:
        raise ApiError(404, {"error": "schedule not found"})
    return trigger


async def list_schedules(deps: Deps, now: Callable[[], datetime] = utcnow) -> dict[str, Any]:
    """Every trigger's schedule, in the config's order."""
    states = await _states(deps)
    at = now()
    return {
        "schedules": [
            view(t, states.get(t.id), at) for t in deps.config.triggers if t.schedule is not None
        ]
    }


async def one_schedule(trigger_id: str, deps: Deps) -> dict[str, Any]:
    trigger = _scheduled(trigger_id, deps)
    return view(trigger, (await _states(deps)).get(trigger_id), utcnow())


async def pause(trigger_id: str, deps: Deps) -> dict[str, Any]:
    """Append SchedulePaused unless the schedule is paused already; answer its new view."""
    trigger = _scheduled(trigger_id, deps)
    state = (await _states(deps)).get(trigger_id)
    if state is None or not state.paused:
        await appended(deps.log.append([SchedulePaused(trigger_id=trigger_id)]), deps)
    return await _after(trigger, deps)


async def resume(trigger_id: str, deps: Deps) -> dict[str, Any]:
    """Append ScheduleResumed (since now: the times missed while paused are not made up)
    unless the schedule is not paused; answer its new view."""
    trigger = _scheduled(trigger_id, deps)
    state = (await _states(deps)).get(trigger_id)
    if state is not None and state.paused:
        resumed = ScheduleResumed(trigger_id=trigger_id, since=utcnow())
        await appended(deps.log.append([resumed]), deps)
    return await _after(trigger, deps)


async def _after(trigger: Trigger, deps: Deps) -> dict[str, Any]:
    # Read-your-writes: the book catches up past the event just appended.
    return view(trigger, (await _states(deps)).get(trigger.id), utcnow())
