"""The status service's I/O besides the store: appending admin events, log-end lookups and
the schedules' states."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from hookrun.events import Event, Record, topics
from hookrun.events.kafka import (
    KafkaUnavailable,
    Publisher,
    TopicTable,
    consumer_settings,
    partitions_of,
)
from hookrun.events.murmur import partition_for
from hookrun.events.schedules import SCHEDULE_TYPES, ScheduleState

log = logging.getLogger(__name__)


class EventLog(Protocol):
    """Where the admin API appends events (cancel, test launch, redeliver).

    The gateway appends through the same port, and tests use its Fake twin for both services
    (``hookrun.gateway.adapters.FakeEventLog``).
    """

    #: ``ce_source`` of the records callers encode themselves (the publisher's).
    source: str

    async def append(self, events: Sequence[Event]) -> None:
        """Append and wait for acks=all; raise KafkaUnavailable if not acknowledged in time."""

    async def append_records(self, records: Sequence[Record]) -> None:
        """As :meth:`append`, for events already encoded (``ce_source`` stamped by the caller)."""


class KafkaEventLog:
    """EventLog on a Kafka Publisher."""

    def __init__(self, publisher: Publisher) -> None:
        self._publisher = publisher
        self.source = publisher.source

    async def append(self, events: Sequence[Event]) -> None:
        await self._publisher.publish(events)

    async def append_records(self, records: Sequence[Record]) -> None:
        publisher = self._publisher
        await publisher.wait([await publisher.send_record(record) for record in records])


class LogEnds(Protocol):
    """Where a key's records go and how far that partition's log reaches right now."""

    async def end_of(self, topic: str, key: bytes) -> tuple[int, int]:
        """Return (partition, log-end offset); raise KafkaUnavailable when Kafka does not answer."""


class FakeLogEnds:
    """LogEnds over a dict ``{(topic, partition): end}`` and a fixed partition count."""

    def __init__(self, partitions: int = 1) -> None:
        self.partitions = partitions
        self.ends: dict[tuple[str, int], int] = {}

    async def end_of(self, topic: str, key: bytes) -> tuple[int, int]:
        part = partition_for(key, self.partitions)
        return part, self.ends.get((topic, part), 0)


class KafkaLogEnds:
    """LogEnds with a group-less consumer used only for metadata and ListOffsets requests.

    Concurrent lookups share requests, never answers from the past: a caller joins the next
    ListOffsets request (of every partition of the topic) that has not been sent yet, so the
    offsets it gets were read after it asked. At most one request per topic is in flight.
    """

    def __init__(self, bootstrap: str, *, timeout_s: float = 5.0) -> None:
        self._settings = consumer_settings(bootstrap, "status", group=None)
        self._timeout_s = timeout_s
        self._consumer: AIOKafkaConsumer | None = None
        self._counts: dict[str, int] = {}
        self._starter: asyncio.Task[None] | None = None
        self._next: dict[str, asyncio.Future[dict[int, int]]] = {}
        self._lookups: dict[str, asyncio.Task[None]] = {}

    async def start(self) -> None:
        self._starter = asyncio.create_task(self._connect())

    async def _connect(self) -> None:
        delay = 0.2
        while True:
            consumer = AIOKafkaConsumer(**self._settings)
            try:
                await consumer.start()
            except KafkaError as exc:
                log.warning("log-end lookups: kafka not reachable yet (%s)", exc)
                with contextlib.suppress(Exception):
                    await consumer.stop()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            self._consumer = consumer
            return

    async def stop(self) -> None:
        for task in list(self._lookups.values()):
            task.cancel()
        if self._starter is not None:
            self._starter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._starter
        if self._consumer is not None:
            await self._consumer.stop()

    async def end_of(self, topic: str, key: bytes) -> tuple[int, int]:
        consumer = self._consumer
        if consumer is None:
            raise KafkaUnavailable("not connected to kafka")
        try:
            async with asyncio.timeout(self._timeout_s):
                count = self._counts.get(topic)
                if not count:
                    count = len(await partitions_of(consumer, topic))
                    if not count:
                        raise KafkaUnavailable(f"topic {topic} does not exist")
                    self._counts[topic] = count
                part = partition_for(key, count)
                ends = await asyncio.shield(self._ends_read_from_now(consumer, topic, count))
        except (KafkaError, TimeoutError) as exc:
            raise KafkaUnavailable(f"could not read the log end of {topic}: {exc!r}") from exc
        return part, ends[part]

    def _ends_read_from_now(
        self, consumer: AIOKafkaConsumer, topic: str, count: int
    ) -> asyncio.Future[dict[int, int]]:
        """The log ends of ``topic`` from a request sent after this call (shared by callers)."""
        waiting = self._next.get(topic)
        if waiting is None:
            waiting = self._next[topic] = asyncio.get_running_loop().create_future()
            # Callers may all have timed out: retrieve the exception so it is not logged.
            waiting.add_done_callback(lambda f: f.cancelled() or f.exception())
            if topic not in self._lookups:
                self._lookups[topic] = asyncio.create_task(self._lookup(consumer, topic, count))
        return waiting

    async def _lookup(self, consumer: AIOKafkaConsumer, topic: str, count: int) -> None:
        waiting: asyncio.Future[dict[int, int]] | None = None
        try:
            # Callers that arrive while a request is in flight wait for the next one.
            while (waiting := self._next.pop(topic, None)) is not None:
                parts = [TopicPartition(topic, p) for p in range(count)]
                try:
                    ends = await consumer.end_offsets(parts)
                except Exception as exc:  # every waiter gets it, as from its own request
                    waiting.set_exception(exc)
                else:
                    waiting.set_result({tp.partition: int(end) for tp, end in ends.items()})
        finally:
            if waiting is not None and not waiting.done():
                waiting.cancel()
            self._lookups.pop(topic, None)


class ScheduleBook(Protocol):
    """Every schedule's state as hookrun.schedules says it."""

    async def states(self) -> dict[str, ScheduleState]:
        """The states, with everything on the topic at call time applied.

        Raises KafkaUnavailable when that cannot be told now.
        """


class KafkaScheduleBook:
    """ScheduleBook following the whole (compacted, small) topic without a consumer group."""

    def __init__(
        self, bootstrap: str, *, namespace: str = topics.NAMESPACE, timeout_s: float = 5.0
    ) -> None:
        self._states: dict[str, ScheduleState] = {}
        self._table = TopicTable(
            bootstrap,
            "status",
            topics.named(topics.SCHEDULES, namespace),
            self._apply,
            catch_up_timeout_s=timeout_s,
            # An idle table waits long at the broker (docs/decisions/0008).
            fetch_max_wait_ms=500,
        )

    def _apply(self, event: Event) -> None:
        fold_schedule(self._states, event)

    async def start(self) -> None:
        await self._table.start()

    async def stop(self) -> None:
        await self._table.stop()

    async def states(self) -> dict[str, ScheduleState]:
        await self._table.catch_up()
        return self._states


class FakeScheduleBook:
    """ScheduleBook over the events of a fake event log (unit tests, fuzzing): what the admin
    API appends there is read back, as from the topic."""

    def __init__(self, log: Any = None) -> None:
        #: Anything with an ``events`` list (``hookrun.gateway.adapters.FakeEventLog``).
        self.log = log

    async def states(self) -> dict[str, ScheduleState]:
        states: dict[str, ScheduleState] = {}
        for event in getattr(self.log, "events", ()):
            if isinstance(event, SCHEDULE_TYPES):
                fold_schedule(states, event)
        return states


def fold_schedule(states: dict[str, ScheduleState], event: Event) -> None:
    """Fold one event of hookrun.schedules into the state of its schedule."""
    trigger_id = event.key
    found = states.get(trigger_id)
    if found is None:
        found = states[trigger_id] = ScheduleState(trigger_id)
    found.apply(event)
