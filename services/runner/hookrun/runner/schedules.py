"""Scheduled triggers: the owner of a schedule's partition fires its due times, each once.

The runners that have schedules in their config form a consumer group on hookrun.schedules
(keyed by trigger id). Owning a partition is the right to fire its schedules: on assignment a
runner replays the partition (the schedules' state), then starts a transactional producer
whose id is the partition's, which fences whoever held it before and settles what that one
left open, reads on to the log end, and only then fires. Each firing commits ScheduleFired
and the run's TriggerLaunched in one transaction, the run id derived from the due time
(decision 0050).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import orjson
from aiokafka import TopicPartition

from hookrun.config import HookrunConfig, Trigger
from hookrun.config.model.schedules import Schedule
from hookrun.events import topics, tracing
from hookrun.events.base import Event, utcnow
from hookrun.events.clients import Commit, ConsumerClient
from hookrun.events.consumer import ConsumeLoop
from hookrun.events.kafka import KafkaUnavailable, Publisher
from hookrun.events.maps import EventMap
from hookrun.events.murmur import partition_for
from hookrun.events.runs import LaunchRequest, ScheduledLaunch, TriggerLaunched
from hookrun.events.schedules import (
    SCHEDULE_TYPES,
    ScheduleArmed,
    ScheduleFired,
    SchedulePaused,
    ScheduleSkipped,
    ScheduleState,
    scheduled_run_id,
)
from hookrun.events.service import Partition, Service
from hookrun.events.transactions import TransactionalPublisher
from hookrun.runner import metrics
from hookrun.runner.handlers import EVENTS

log = logging.getLogger("hookrun.runner.schedules")

#: A due time found at most this late is on time whatever its ``misfire_grace_s``: the owner
#: looks every tick, and a firing's transaction takes a moment.
ON_TIME = timedelta(seconds=5)
#: How long a firing's transaction may take before the tick gives up (and the next retries).
APPEND_TIMEOUT_S = 10.0


def plan(
    trigger: Trigger,
    schedule: Schedule,
    state: ScheduleState,
    now: datetime,
    config_version: str,
) -> list[Event]:
    """What the owner appends for ``trigger``'s schedule at ``now``: nothing, an arming, a
    restated pause, a skip, or a firing (ScheduleFired and its TriggerLaunched)."""
    if state.paused:
        return [SchedulePaused(trigger_id=trigger.id)] if state.overtaken else []
    if not trigger.enabled:
        return []
    if state.anchor is None:
        return [ScheduleArmed(trigger_id=trigger.id, since=now)]
    first = schedule.next_after(state.anchor)
    if first > now:
        return []
    due = schedule.last_at_or_before(now)
    if now - due > max(schedule.grace, ON_TIME):
        log.warning(
            "schedule of %s: due times %s to %s missed by more than %ss: skipped",
            trigger.id,
            first.isoformat(),
            due.isoformat(),
            schedule.misfire_grace_s,
        )
        return [
            ScheduleSkipped(
                trigger_id=trigger.id,
                due_at=due,
                first_due_at=first,
                found_at=now,
                misfire_grace_s=schedule.misfire_grace_s,
            )
        ]
    run_id = scheduled_run_id(trigger.id, due)
    # No request to continue a trace from: each firing starts one, which its run carries on.
    trace = tracing.new_trace()
    launched = scheduled_launch(trigger, schedule, due, run_id, config_version, trace)
    fired = ScheduleFired(
        **tracing.fields(trace),
        trigger_id=trigger.id,
        due_at=due,
        run_id=run_id,
        config_version=config_version,
        fired_at=now,
        skipped_since=first if first < due else None,
    )
    return [fired, launched]


def scheduled_launch(
    trigger: Trigger,
    schedule: Schedule,
    due: datetime,
    run_id: str,
    config_version: str,
    trace: tracing.TraceContext | None = None,
) -> TriggerLaunched:
    """The launch of a due time: no HTTP request, a JSON body naming the schedule instead, so
    actions may use ``{payload.schedule.due_at}``."""
    named = ScheduledLaunch(due_at=due, cron=schedule.cron, timezone=schedule.timezone)
    body = orjson.dumps({"schedule": named.model_dump(mode="json")})
    return TriggerLaunched(
        run_id=run_id,
        trigger_id=trigger.id,
        config_version=config_version,
        request=LaunchRequest(
            method="SCHEDULE",
            path=f"/api/v0/launch/{trigger.id}/",
            headers={"content-type": "application/json"},
            content_type="application/json",
            body_b64=base64.b64encode(body).decode(),
        ),
        schedule=named,
        **tracing.fields(trace),
    )


@dataclass(eq=False)
class Owned:
    """A partition of hookrun.schedules owned here: its schedules' state and its fencing."""

    number: int
    states: dict[str, ScheduleState] = field(default_factory=dict)
    publisher: TransactionalPublisher | None = None
    #: The log end read once the publisher fenced the previous owner: nothing fires before
    #: the partition is read up to it.
    fenced_end: int | None = None
    #: After a failed firing: when to start a fencing producer again (time.monotonic()).
    refence_at: float = 0.0

    def state(self, trigger_id: str) -> ScheduleState:
        found = self.states.get(trigger_id)
        if found is None:
            found = self.states[trigger_id] = ScheduleState(trigger_id)
        return found


#: The schedules group's table (the runner's, on hookrun.schedules alone): its own metrics label.
SCHEDULE_EVENTS = EventMap(
    "runner-schedules",
    frozenset({topics.SCHEDULES}),
    {cls: EVENTS.handlers[cls] for cls in SCHEDULE_TYPES},
)


class Scheduler(Service[Owned]):
    """Fires the schedules of the partitions of hookrun.schedules its group gives it."""

    def __init__(
        self,
        *,
        config: HookrunConfig,
        consumer: ConsumerClient,
        publisher: Publisher,
        bootstrap: str,
        tick_s: float = 1.0,
        clock: Callable[[], datetime] = utcnow,
        send_timeout_s: float = 10.0,
        group: bool = True,
    ) -> None:
        """``group=False`` takes every partition by hand (tests of two owners at once)."""
        self.config = config
        #: Ticks that looked at a fenced partition: tests wait for some to pass.
        self.ticks = 0
        self.clock = clock
        self._consumer = consumer
        self._publisher = publisher
        self._bootstrap = bootstrap
        self._send_timeout_s = send_timeout_s
        self.namespace = publisher.namespace
        self._topic = topics.named(topics.SCHEDULES, self.namespace)
        self._partitions: int | None = None
        self.schedules = [t for t in config.triggers if t.schedule is not None]
        self.loop = ConsumeLoop(
            self,
            consumer=consumer,
            publisher=publisher,
            topics=[topics.SCHEDULES],
            events=SCHEDULE_EVENTS,
            handlers={cls: [self.apply] for cls in SCHEDULE_TYPES},
            # The state is folded from the whole (compacted) partition at each assignment.
            commit_every_s=None,
            sweep_every_s=tick_s,
            group=group,
        )

    async def run(self, stopping: asyncio.Event) -> None:
        """Consume and fire until ``stopping`` is set.

        Raises KafkaError when the topic does not exist (yet) or Kafka cannot be reached.
        """
        await self.loop.start()
        try:
            # The partition of a schedule is its trigger id's, as the producer picks it.
            found = await self._consumer.partitions_of_topics([self._topic])
            self._partitions = len(found)
            while not stopping.is_set():
                await self.loop.step()
        finally:
            await self.loop.close()

    # -- the loop's hooks -----------------------------------------------------------------

    def open(self, tp: TopicPartition) -> Owned:
        return Owned(tp.partition)

    async def replay_start(self, tp: TopicPartition, committed: Commit | None) -> int | None:
        return None

    async def apply(self, event: Event, offset: int, owned: Owned) -> Sequence[Event]:
        owned.state(event.key).apply(event)
        return ()

    async def _fence(self, owned: Owned) -> None:
        # Its transactional id is the partition's: starting it fences the previous owner.
        owned.publisher = TransactionalPublisher(
            self._bootstrap,
            "runner",
            f"{self.namespace}.schedules.{owned.number}",
            send_timeout_s=self._send_timeout_s,
            namespace=self.namespace,
        )
        owned.fenced_end = None
        await owned.publisher.start()

    async def revoked(self, part: Partition[Owned]) -> None:
        if part.state.publisher is not None:
            await part.state.publisher.stop()
            part.state.publisher = None

    async def drain(self) -> None:
        for part in list(self.loop.parts.values()):
            await self.revoked(part)

    async def sweep(self) -> None:
        """Every tick: fire, skip or arm what is due in each partition owned and fenced."""
        for part in list(self.loop.parts.values()):
            schedules = self._schedules_of(part.state.number)
            # A partition without a schedule of this config needs no producer of its own.
            if schedules and part.live and await self._fenced(part):
                await self._tick(part.state, schedules)

    async def _fenced(self, part: Partition[Owned]) -> bool:
        """True once the fencing producer is up and the partition is read to the end it found.

        The producer is started at the first tick after the partition went live, and again a
        while after a firing failed.
        """
        owned = part.state
        if owned.publisher is None:
            if time.monotonic() < owned.refence_at:
                return False
            await self._fence(owned)
        if owned.publisher is None or not owned.publisher.ready:
            # A replaced producer fences anew: read on to the end after it again.
            owned.fenced_end = None
            return False
        if owned.fenced_end is None:
            ends = await self._consumer.end_offsets([part.tp])
            owned.fenced_end = ends[part.tp]
        return await self._consumer.position(part.tp) >= owned.fenced_end

    async def _tick(self, owned: Owned, schedules: list[Trigger]) -> None:
        self.ticks += 1
        now = self.clock()
        for trigger in schedules:
            assert trigger.schedule is not None
            state = owned.state(trigger.id)
            events = plan(trigger, trigger.schedule, state, now, self.config.config_version)
            if not events:
                continue
            assert owned.publisher is not None
            try:
                await owned.publisher.append(
                    [self._publisher.record(e) for e in events], timeout_s=APPEND_TIMEOUT_S
                )
            except KafkaUnavailable as exc:
                # Perhaps fenced by another owner that still holds the partition (until its
                # rebalance): fence back only after a random pause, so that one of two owners
                # gets to fire rather than each fencing the other for ever.
                pause = random.uniform(0.5, 2.0)
                log.warning(
                    "schedule of %s: not recorded (%s); fencing again in %.1fs",
                    trigger.id,
                    exc,
                    pause,
                )
                await owned.publisher.stop()
                owned.publisher, owned.refence_at = None, time.monotonic() + pause
                return
            for event in events:
                if not isinstance(event, TriggerLaunched):
                    state.apply(event)
                if isinstance(event, ScheduleSkipped):
                    metrics.SCHEDULE_DUE_TIMES.labels(trigger.id, "skipped").inc()
                if isinstance(event, ScheduleFired):
                    metrics.SCHEDULE_DUE_TIMES.labels(trigger.id, "fired").inc()
                    log.info(
                        "schedule of %s fired %s: run %s",
                        trigger.id,
                        event.due_at.isoformat(),
                        event.run_id,
                    )

    def _schedules_of(self, partition: int) -> list[Trigger]:
        if self._partitions is None:
            return []
        return [
            t for t in self.schedules if partition_for(t.id.encode(), self._partitions) == partition
        ]
