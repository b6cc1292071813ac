"""The projection consumer: reads hookrun.runs and hookrun.triggers and applies batches to the store.

With SQLite each instance is a full replica (manual assignment of every partition); with
PostgreSQL the instances form one consumer group and share the database. Either way the consumer
seeks to the offsets stored in the database and never relies on Kafka's committed offsets.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError

from hookrun.events import topics
from hookrun.events.codec import InvalidEvent, UnknownEventType, decode
from hookrun.events.kafka import Publisher, consumer_settings, dead_letter, partitions_of
from hookrun.status.projection import Position, cloudevent_json, fold
from hookrun.status.store import Applied, SqlStore

log = logging.getLogger(__name__)


class Progress:
    """Wakes up readers waiting for the projection to reach an offset."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def notify(self) -> None:
        event, self._event = self._event, asyncio.Event()
        event.set()

    async def wait(self, timeout_s: float) -> None:
        """Return after the next applied batch, or after ``timeout_s`` (another instance's)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self._event.wait()


class _SeekToStored(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, projector: Projector) -> None:
        self._projector = projector

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        pass  # offsets are in the database already; nothing to commit

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        await self._projector.seek_to_stored(list(assigned))


class Projector:
    """Folds the run and trigger-log topics into a store, one DB transaction per batch."""

    def __init__(
        self,
        store: SqlStore,
        bootstrap: str,
        *,
        namespace: str = topics.NAMESPACE,
        group: str | None = None,
        publisher: Publisher | None = None,
        batch_records: int = 2000,
        progress: Progress | None = None,
    ) -> None:
        self.store = store
        self.group = group
        self.topics = [
            topics.named(topics.RUNS, namespace),
            topics.named(topics.TRIGGERS, namespace),
        ]
        self.progress = progress or Progress()
        self.running = False
        self.applied = 0
        self._settings = consumer_settings(bootstrap, "status", group=group)
        self._publisher = publisher
        self._batch_records = batch_records
        self._consumer: AIOKafkaConsumer | None = None
        self._accept_gaps: dict[tuple[str, int], int] = {}

    @property
    def assignment(self) -> list[TopicPartition]:
        """The partitions this instance projects now."""
        return sorted(self._consumer.assignment()) if self._consumer else []

    async def _connect(self) -> AIOKafkaConsumer:
        delay = 0.2
        while True:
            consumer = AIOKafkaConsumer(**self._settings)
            self._consumer = consumer
            try:
                await consumer.start()
                if self.group is not None:
                    consumer.subscribe(self.topics, listener=_SeekToStored(self))
                    return consumer
                parts = [tp for t in self.topics for tp in await partitions_of(consumer, t)]
                if len(parts) < len(self.topics):
                    raise KafkaError("topics do not exist yet")
                consumer.assign(parts)
                await self.seek_to_stored(parts)
                return consumer
            except KafkaError as exc:
                log.warning("projection: waiting for kafka (%s); retrying in %.1fs", exc, delay)
                with contextlib.suppress(Exception):
                    await consumer.stop()
                self._consumer = None
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def seek_to_stored(self, parts: list[TopicPartition]) -> None:
        """Continue each partition where the database says this projection stopped."""
        assert self._consumer is not None
        for topic in {tp.topic for tp in parts}:
            stored = await self.store.offsets(topic)
            for tp in parts:
                if tp.topic == topic:
                    # Offset 0 on a log whose start was deleted resets to the earliest record
                    # (auto_offset_reset); the gap check then accepts that start.
                    self._consumer.seek(tp, stored.get(tp.partition, 0))

    async def run(self, *, until: Callable[[], bool] | None = None) -> None:
        """Project until cancelled, or until ``until()`` is true after a batch (rebuild)."""
        consumer = await self._connect()
        self.running = True
        try:
            while until is None or not until():
                batches = await consumer.getmany(timeout_ms=200, max_records=self._batch_records)
                if batches:
                    await self._apply(consumer, batches)
        finally:
            self.running = False
            await consumer.stop()
            self._consumer = None

    async def _apply(self, consumer: AIOKafkaConsumer, batches: dict) -> None:  # type: ignore[type-arg]
        items: list[Applied] = []
        for tp, records in batches.items():
            for record in records:
                try:
                    event = decode(record.value, record.headers)
                except UnknownEventType:
                    event = None  # newer producers' types: skip, but count the offset
                except InvalidEvent as exc:
                    event = None
                    if self._publisher is not None:
                        log.warning(
                            "dead-lettering %s/%s@%s: %s",
                            tp.topic,
                            tp.partition,
                            record.offset,
                            exc,
                        )
                        await dead_letter(self._publisher, record, str(exc))
                ops = ()
                if event is not None:
                    at = Position(
                        tp.topic,
                        tp.partition,
                        record.offset,
                        cloudevent_json(record.value, record.headers),
                    )
                    ops = fold(event, at)
                items.append(Applied(tp.topic, tp.partition, record.offset, ops))
        result = await self.store.apply(items, self._accept_gaps)
        self.applied += result.applied
        for (topic, part), offset in result.gaps.items():
            log.info("projection: re-reading %s/%s from offset %s", topic, part, offset)
            self._accept_gaps[(topic, part)] = offset
            consumer.seek(TopicPartition(topic, part), offset)
        self.progress.notify()


async def log_ends(bootstrap: str, names: list[str]) -> dict[TopicPartition, int]:
    """The current log-end offset of every partition of ``names`` (what a rebuild replays to)."""
    consumer = AIOKafkaConsumer(**consumer_settings(bootstrap, "status-rebuild", group=None))
    await consumer.start()
    try:
        parts = [tp for name in names for tp in await partitions_of(consumer, name)]
        return dict(await consumer.end_offsets(parts))
    finally:
        await consumer.stop()
