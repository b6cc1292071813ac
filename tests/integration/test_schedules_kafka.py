"""Scheduled triggers against the real broker: every due time fires once, whoever owns it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from hookrun.config import HookrunConfig, parse_config
from hookrun.dev.events import RawEvent, read_events
from hookrun.dev.pytest_kafka import new_namespace
from hookrun.events import topics
from hookrun.events.base import Event, utcnow
from hookrun.events.clients import GroupConsumer, consumer_settings
from hookrun.events.codec import InvalidEvent, Record, decode
from hookrun.events.kafka import Publisher, ensure_topics
from hookrun.events.runs import TriggerLaunched
from hookrun.events.schedules import (
    ScheduleArmed,
    ScheduleFired,
    SchedulePaused,
    ScheduleResumed,
    ScheduleSkipped,
    scheduled_run_id,
)
from hookrun.runner.schedules import Scheduler

pytestmark = pytest.mark.kafka

CONFIG = """
project: {{id: p-1, slug: demo, name: Demo}}
organization: {{id: o-1, slug: acme, title: Acme}}
environment: {{id: e-1, slug: dev, type: DEVELOPMENT}}
steps:
  - {{name: noop, command: ["true"]}}
triggers:
  - id: {trigger}
    title: scheduled
    actions: [{{action: run_execution, step: noop}}]
    schedule: {schedule}
"""

#: Every second: a test sees several due times without waiting for minutes.
EVERY_SECOND = '{cron: "* * * * * *", misfire_grace_s: 0}'


def config_of(trigger: str, schedule: str) -> HookrunConfig:
    return parse_config(CONFIG.format(trigger=trigger, schedule=schedule), "hookrun.yaml")


class System:
    """One namespace: its topics, a publisher standing in for the admin API, schedulers."""

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self.ns = new_namespace("sched")
        self.publisher = Publisher(bootstrap, "test", namespace=self.ns)
        self.running: list[tuple[Scheduler, asyncio.Event, asyncio.Task[None], Publisher]] = []

    async def start(self) -> None:
        await ensure_topics(self.bootstrap, namespace=self.ns)
        await self.publisher.start(wait=True)

    async def scheduler(
        self,
        config: HookrunConfig,
        *,
        clock: Callable[[], datetime] = utcnow,
        group: bool = True,
    ) -> Scheduler:
        publisher = Publisher(self.bootstrap, "runner", namespace=self.ns)
        await publisher.start(wait=True)
        settings = consumer_settings(
            self.bootstrap, "runner", group=f"{self.ns}.runner-schedules" if group else None
        )
        scheduler = Scheduler(
            config=config,
            consumer=GroupConsumer(**settings),
            publisher=publisher,
            bootstrap=self.bootstrap,
            tick_s=0.1,
            clock=clock,
            group=group,
        )
        stopping = asyncio.Event()
        task = asyncio.create_task(scheduler.run(stopping))
        self.running.append((scheduler, stopping, task, publisher))
        return scheduler

    async def stop(self, scheduler: Scheduler) -> None:
        for entry in list(self.running):
            if entry[0] is scheduler:
                self.running.remove(entry)
                _, stopping, task, publisher = entry
                stopping.set()
                await asyncio.wait_for(task, 30)
                await publisher.stop()

    async def close(self) -> None:
        for scheduler, *_ in list(self.running):
            with contextlib.suppress(Exception):
                await self.stop(scheduler)
        await self.publisher.stop()

    async def events(
        self, topic: str, until: Callable[[list[Event]], bool] | None = None
    ) -> list[Event]:
        def decoded(raw: Iterable[RawEvent]) -> list[Event]:
            out = []
            for r in raw:
                # What a consumer dead-letters is no event (a test writes such a record).
                with contextlib.suppress(InvalidEvent):
                    out.append(decode(r.value, [(k, v.encode()) for k, v in r.headers.items()]))
            return out

        raw = await read_events(
            self.bootstrap,
            topics.named(topic, self.ns),
            until=None if until is None else (lambda found: until(decoded(found))),
            timeout_s=20,
        )
        return decoded(raw)

    async def fired(self, until: Callable[[list[Any]], bool] | None = None) -> list[Any]:
        """The ScheduleFired records, read until ``until`` is true of them."""

        def only(events: list[Event]) -> list[Any]:
            return [e for e in events if isinstance(e, ScheduleFired)]

        done = None if until is None else (lambda events: until(only(events)))
        return only(await self.events(topics.SCHEDULES, done))

    async def launches(self) -> list[TriggerLaunched]:
        return [e for e in await self.events(topics.RUNS) if isinstance(e, TriggerLaunched)]


async def ticked(scheduler: Scheduler, ticks: int = 5, timeout_s: float = 30.0) -> None:
    """Wait until ``scheduler`` has looked at its fenced partitions ``ticks`` more times."""
    target = scheduler.ticks + ticks
    async with asyncio.timeout(timeout_s):
        while scheduler.ticks < target:
            await asyncio.sleep(0.05)


@pytest.fixture
async def system(kafka_bootstrap: str) -> AsyncIterator[System]:
    s = System(kafka_bootstrap)
    await s.start()
    try:
        yield s
    finally:
        await s.close()


def fixed(at: datetime) -> Callable[[], datetime]:
    return lambda: at


def an_hour_ago_on_the_hour() -> datetime:
    return (utcnow() - timedelta(hours=1)).replace(minute=0, second=0, microsecond=0)


async def test_two_instances_fire_each_due_time_once(system: System) -> None:
    config = config_of("tick", EVERY_SECOND)
    first = await system.scheduler(config)
    second = await system.scheduler(config)
    await ticked(first)
    await system.fired(until=lambda found: len(found) >= 4)
    await system.stop(first)
    await system.stop(second)

    fired = await system.fired()
    due = [e.due_at for e in fired if isinstance(e, ScheduleFired)]
    assert len(due) >= 4
    assert len(set(due)) == len(due), "a due time fired twice"
    launched = await system.launches()
    assert sorted(e.run_id for e in launched) == sorted(
        scheduled_run_id("tick", at) for at in due
    ), "each firing launched exactly its own run"
    assert all(e.schedule is not None and e.schedule.due_at in due for e in launched)
    assert all(e.traceparent is not None for e in launched), "a scheduled run starts a trace"


async def test_two_owners_at_once_are_fenced_to_one_firing_per_due_time(system: System) -> None:
    # Both take every partition by hand, as a stale owner does until it learns of a rebalance:
    # the partition's transactional id fences one of them at each firing.
    config = config_of("tick", EVERY_SECOND)
    first = await system.scheduler(config, group=False)
    second = await system.scheduler(config, group=False)
    await ticked(first)
    await ticked(second)
    await system.fired(until=lambda found: len(found) >= 3)
    await system.stop(first)
    await system.stop(second)

    due = [e.due_at for e in await system.fired()]
    assert len(due) >= 2
    assert len(set(due)) == len(due), "a due time fired twice"
    assert len({e.run_id for e in await system.launches()}) == len(due)


async def test_a_restart_right_after_firing_does_not_fire_again(system: System) -> None:
    config = config_of("hourly", '{cron: "0 * * * *", misfire_grace_s: 300}')
    due = an_hour_ago_on_the_hour() + timedelta(hours=1)
    await system.publisher.publish(
        [ScheduleArmed(trigger_id="hourly", since=due - timedelta(minutes=30))]
    )
    clock = fixed(due + timedelta(seconds=1))
    first = await system.scheduler(config, clock=clock)
    await system.fired(until=lambda found: len(found) >= 1)
    await system.stop(first)

    again = await system.scheduler(config, clock=clock)
    await ticked(again, ticks=10)
    await system.stop(again)
    fired = await system.fired()
    assert [e.due_at for e in fired] == [due]
    assert [e.run_id for e in await system.launches()] == [scheduled_run_id("hourly", due)]


async def test_a_time_missed_within_grace_fires_once_on_recovery(system: System) -> None:
    config = config_of("quarterly", '{cron: "*/15 * * * *", misfire_grace_s: 300}')
    anchor = an_hour_ago_on_the_hour()
    last = anchor + timedelta(hours=1)
    await system.publisher.publish([ScheduleArmed(trigger_id="quarterly", since=anchor)])
    # Everything was down from the anchor until two minutes after the last due time.
    recovered = await system.scheduler(config, clock=fixed(last + timedelta(minutes=2)))
    await ticked(recovered, ticks=10)
    await system.stop(recovered)

    fired = await system.fired()
    assert [(e.due_at, e.skipped_since) for e in fired] == [
        (last, anchor + timedelta(minutes=15))
    ], "the newest due time fired once, standing for the three missed before it"
    assert len(await system.launches()) == 1


async def test_a_time_missed_beyond_grace_is_skipped_and_recorded(system: System) -> None:
    config = config_of("hourly", '{cron: "0 * * * *", misfire_grace_s: 300}')
    anchor = an_hour_ago_on_the_hour() - timedelta(hours=2)
    await system.publisher.publish([ScheduleArmed(trigger_id="hourly", since=anchor)])
    now = anchor + timedelta(hours=3, minutes=30)
    recovered = await system.scheduler(config, clock=fixed(now))
    await ticked(recovered, ticks=10)
    await system.stop(recovered)

    events = await system.events(topics.SCHEDULES)
    skipped = [e for e in events if isinstance(e, ScheduleSkipped)]
    assert [(e.first_due_at, e.due_at, e.found_at) for e in skipped] == [
        (anchor + timedelta(hours=1), anchor + timedelta(hours=3), now)
    ]
    assert not [e for e in events if isinstance(e, ScheduleFired)]
    assert await system.launches() == []


async def test_pause_stops_firing_and_resume_starts_at_the_next_due_time(system: System) -> None:
    config = config_of("tick", EVERY_SECOND)
    scheduler = await system.scheduler(config)
    await system.fired(until=lambda found: len(found) >= 2)

    await system.publisher.publish([SchedulePaused(trigger_id="tick")])
    await ticked(scheduler)
    before = len(await system.fired())
    await asyncio.sleep(2.5)
    await ticked(scheduler)
    assert len(await system.fired()) == before, "a paused schedule fired"

    resumed = ScheduleResumed(trigger_id="tick", since=utcnow())
    await system.publisher.publish([resumed])
    fired = await system.fired(until=lambda found: len(found) >= before + 2)
    await system.stop(scheduler)
    after = fired[before:]
    assert len(after) >= 2
    assert after[0].due_at > resumed.since
    assert after[0].skipped_since is None, "the times missed while paused were made up"


async def test_an_undecodable_record_is_dead_lettered_and_firing_goes_on(system: System) -> None:
    # A known type whose value is not JSON: the CloudEvents headers of a real one.
    headers = system.publisher.record(ScheduleArmed(trigger_id="tick", since=utcnow())).headers
    record = Record(topics.SCHEDULES, b"tick", b"{not json", headers)
    await system.publisher.wait([await system.publisher.send_record(record)])
    scheduler = await system.scheduler(config_of("tick", EVERY_SECOND))
    await system.fired(until=lambda found: len(found) >= 2)
    await system.stop(scheduler)
    dead = await read_events(
        system.bootstrap, topics.named(topics.dlq(topics.SCHEDULES), system.ns), timeout_s=5
    )
    assert [(d.key, d.value) for d in dead] == [("tick", b"{not json")]


async def test_a_firing_that_overtook_a_pause_restates_it(system: System) -> None:
    # The pause is read before the firing that the owner appended without having seen it.
    config = config_of("hourly", '{cron: "0 * * * *", misfire_grace_s: 300}')
    due = an_hour_ago_on_the_hour() + timedelta(hours=1)
    await system.publisher.publish(
        [
            ScheduleArmed(trigger_id="hourly", since=due - timedelta(minutes=30)),
            SchedulePaused(trigger_id="hourly"),
            ScheduleFired(
                trigger_id="hourly",
                due_at=due,
                run_id=scheduled_run_id("hourly", due),
                config_version="v",
                fired_at=due,
            ),
        ]
    )
    scheduler = await system.scheduler(config, clock=fixed(due + timedelta(minutes=61)))
    await ticked(scheduler)
    await system.stop(scheduler)
    events = await system.events(topics.SCHEDULES)
    assert isinstance(events[-1], SchedulePaused), "the newest record says it is paused"
    assert datetime.now(UTC) > due
