"""Events about one trigger's schedule: due times fired or skipped, pauses and resumes.

Key: the trigger id, so one schedule's events are ordered in one partition, whose owner (a
runner of the schedules group) is the only one that fires it. The topic is compacted: the
newest record of a schedule states all that is needed to go on (:class:`ScheduleState`).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from hookrun.events import topics
from hookrun.events.base import Event
from hookrun.events.registry import register

#: UUID namespace of the run ids of scheduled launches.
_RUN_IDS = uuid.UUID("6f1d7c3e-2b8a-5e4f-9c0d-1a2b3c4d5e6f")


def scheduled_run_id(trigger_id: str, due_at: datetime) -> str:
    """The run id of ``trigger_id``'s launch for the due time ``due_at`` (aware).

    A UUID5 of both, so every instance that fires that due time names the same run: a second
    TriggerLaunched of a run id starts nothing (runners and the status projection keep the
    first), and a crash between firing and launching cannot make two runs of one due time.
    """
    moment = due_at.astimezone(UTC).isoformat(timespec="microseconds")
    return str(uuid.uuid5(_RUN_IDS, f"{trigger_id}\n{moment}"))


class _ScheduleEvent(Event):
    key_field = "trigger_id"

    trigger_id: str


@register(
    "hookrun.schedule.armed",
    version=1,
    topic=topics.SCHEDULES,
    producers=("runner",),
    consumers=("runner", "status"),
)
class ScheduleArmed(_ScheduleEvent):
    """A schedule was seen for the first time: its due times count from ``since`` on."""

    since: datetime


@register(
    "hookrun.schedule.fired",
    version=1,
    topic=topics.SCHEDULES,
    producers=("runner",),
    consumers=("runner", "status"),
)
class ScheduleFired(_ScheduleEvent):
    """The due time ``due_at`` launched ``run_id``, in the same transaction as its TriggerLaunched.

    ``run_id`` is derived from the trigger id and the due time, so a due time can never start
    two runs. ``skipped_since``: earlier due times missed while no runner was up that this one
    stands for (they are not fired on their own).
    """

    due_at: datetime
    run_id: str
    config_version: str
    #: When the launch was appended; later than ``due_at`` by the firing's delay.
    fired_at: datetime
    skipped_since: datetime | None = None


@register(
    "hookrun.schedule.skipped",
    version=1,
    topic=topics.SCHEDULES,
    producers=("runner",),
    consumers=("runner", "status"),
)
class ScheduleSkipped(_ScheduleEvent):
    """Due times from ``first_due_at`` to ``due_at`` were found more than the schedule's
    ``misfire_grace_s`` late (no runner was up then) and started nothing."""

    due_at: datetime
    first_due_at: datetime
    #: When the owner found them.
    found_at: datetime
    misfire_grace_s: int
    reason: Literal["past_misfire_grace"] = "past_misfire_grace"


@register(
    "hookrun.schedule.paused",
    version=1,
    topic=topics.SCHEDULES,
    producers=("status", "runner"),
    consumers=("runner", "status"),
)
class SchedulePaused(_ScheduleEvent):
    """The schedule fires nothing until it is resumed (admin API).

    The runner restates a pause that a firing overtook on the log, so that the schedule's
    newest record, which compaction keeps, still says it is paused.
    """


@register(
    "hookrun.schedule.resumed",
    version=1,
    topic=topics.SCHEDULES,
    producers=("status",),
    consumers=("runner", "status"),
)
class ScheduleResumed(_ScheduleEvent):
    """The schedule fires again from the first due time after ``since``: the times it missed
    while paused are not made up."""

    since: datetime


#: Every schedule event type, in the order of a schedule's life.
SCHEDULE_TYPES: tuple[type[Event], ...] = (
    ScheduleArmed,
    ScheduleFired,
    ScheduleSkipped,
    SchedulePaused,
    ScheduleResumed,
)


@dataclass
class ScheduleState:
    """What a schedule's events say, folded in log order.

    ``anchor``: due times after it are still to fire (None: never armed). ``paused`` follows
    the newest pause or resume; a firing does not change it.
    """

    trigger_id: str
    anchor: datetime | None = None
    paused: bool = False
    last_fired: ScheduleFired | None = None
    last_skipped: ScheduleSkipped | None = None
    #: A firing was read after a pause: the pause must be restated (see SchedulePaused).
    overtaken: bool = False

    def apply(self, event: Event) -> None:
        """Fold one event of this schedule (others are ignored)."""
        if isinstance(event, ScheduleFired | ScheduleSkipped):
            self.anchor = _later(self.anchor, event.due_at)
            if isinstance(event, ScheduleFired):
                self.last_fired = event
            else:
                self.last_skipped = event
            self.overtaken = self.paused
        elif isinstance(event, ScheduleArmed | ScheduleResumed):
            self.anchor = _later(self.anchor, event.since)
            self.paused = self.overtaken = False
        elif isinstance(event, SchedulePaused):
            self.paused = True
            self.overtaken = False


def _later(a: datetime | None, b: datetime) -> datetime:
    return b if a is None or b > a else a
