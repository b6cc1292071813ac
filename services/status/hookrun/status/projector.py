"""The projection consumer: reads hookrun.runs and hookrun.triggers and applies batches to the store.

With SQLite each instance is a full replica (manual assignment of every partition); with
PostgreSQL the instances form one consumer group and share the database. Either way the consumer
seeks to the offsets stored in the database and never relies on Kafka's committed offsets.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Collection
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError

from hookrun.events import topics
from hookrun.events.codec import InvalidEvent, UnknownEventType, decode
from hookrun.events.kafka import Publisher, consumer_settings, dead_letter, partitions_of_topics
from hookrun.status import replay
from hookrun.status.projection import Position, cloudevent_json, fold
from hookrun.status.statements import Statement
from hookrun.status.store import Applied, ApplyResult, SqlStore, grouped

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


#: See Projector.__init__; a run's events are about 3 KiB.
FETCH_MIN_BYTES = 64 * 1024


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
        trusted: bool = False,
        partitions: Collection[TopicPartition] | None = None,
        fold_in_thread: bool = True,
    ) -> None:
        """``partitions``: project only these (a rebuild's share); else every partition.

        ``fold_in_thread=False``: decode and fold on the event loop. For a rebuild process that
        has no spare core: the thread hand-offs would then only cost CPU.
        """
        self.store = store
        self.group = group
        self.topics = [
            topics.named(topics.RUNS, namespace),
            topics.named(topics.TRIGGERS, namespace),
        ]
        self.progress = progress or Progress()
        self.running = False
        self.applied = 0
        #: The next offset this projector stored per (topic, partition).
        self.positions: dict[tuple[str, int], int] = {}
        self._settings = consumer_settings(bootstrap, "status", group=group)
        # The broker holds a fetch until this much is there or fetch_max_wait_ms (20 ms) passed:
        # at a moderate rate the projection then takes a batch per 20 ms instead of one per
        # record or two (each its own fetch, thread hop and transaction).
        self._settings["fetch_min_bytes"] = FETCH_MIN_BYTES
        self._publisher = publisher
        self._batch_records = batch_records
        self._consumer: AIOKafkaConsumer | None = None
        self._accept_gaps: dict[tuple[str, int], int] = {}
        #: Fold records straight from their JSON (``replay``): for a rebuild, which replays
        #: records validated when they were written.
        self._trusted = trusted
        self._only = None if partitions is None else frozenset(partitions)
        self._fold_in_thread = fold_in_thread

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
                parts = await partitions_of_topics(consumer, self.topics)
                if len(parts) < len(self.topics):
                    raise KafkaError("topics do not exist yet")
                if self._only is not None:
                    parts = [tp for tp in parts if tp in self._only]
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

    async def run(
        self,
        *,
        until: Callable[[], bool] | None = None,
        read_to: dict[TopicPartition, int] | None = None,
    ) -> None:
        """Project until cancelled, or until ``until()`` is true after a batch (rebuild).

        Two batches overlap: while one is written (SQLite releases the GIL, PostgreSQL waits on
        the network), the next is fetched, decoded and folded. It is applied only after the
        previous transaction committed, and thrown away (re-read) if that one found a gap.

        ``read_to`` (a rebuild's log ends): while a batch is written, wait for the next records
        instead of polling, until every partition was read up to there, so that the next batch
        is folded while this one is written rather than after it.
        """
        consumer = await self._connect()
        self.running = True
        writing: asyncio.Task[ApplyResult] | None = None
        read: dict[tuple[str, int], int] = {}
        try:
            while until is None or not until():
                if writing is not None and read_to is not None and _read_all(read, read_to):
                    batches = {}
                else:
                    waits = writing is None or read_to is not None
                    batches = await consumer.getmany(
                        timeout_ms=200 if waits else 0, max_records=self._batch_records
                    )
                if read_to is not None:
                    for tp, records in batches.items():
                        if records:
                            read[(tp.topic, tp.partition)] = records[-1].offset + 1
                # Decoding and folding are pure CPU work: a worker thread does them so that
                # the event loop keeps serving requests and fetching meanwhile (unless there
                # is no core to spare for it, see fold_in_thread).
                if not batches:
                    prepared = None
                elif self._fold_in_thread:
                    prepared = await asyncio.to_thread(_prepare_grouped, batches, self._trusted)
                else:
                    prepared = _prepare_grouped(batches, self._trusted)
                if writing is not None:
                    result, writing = await writing, None
                    if result.gaps:
                        self._reread(consumer, result.gaps, batches)
                        read.clear()  # read again from where the store stands
                        continue
                if prepared is not None:
                    items, invalid, grouped = prepared
                    await self._dead_letter(invalid)
                    writing = asyncio.create_task(self._write(items, grouped))
            if writing is not None:
                await writing
        finally:
            self.running = False
            if writing is not None:
                # Let the open transaction finish (at most one batch) rather than abandon it.
                with contextlib.suppress(Exception, asyncio.CancelledError):
                    await writing
            await consumer.stop()
            self._consumer = None

    async def _dead_letter(self, invalid: list[tuple[TopicPartition, Any, str]]) -> None:
        if self._publisher is None:
            return
        for tp, record, reason in invalid:
            log.warning(
                "dead-lettering %s/%s@%s: %s", tp.topic, tp.partition, record.offset, reason
            )
            await dead_letter(self._publisher, record, reason)

    async def _write(self, items: list[Applied], grouped: list[Statement] | None) -> ApplyResult:
        result = await self.store.apply(items, self._accept_gaps, grouped=grouped)
        self.applied += result.applied
        self.positions.update(result.offsets)
        self.progress.notify()
        return result

    def _reread(
        self,
        consumer: AIOKafkaConsumer,
        gaps: dict[tuple[str, int], int],
        unapplied: dict,  # type: ignore[type-arg]
    ) -> None:
        """Seek back to the stored offset of each gap, and to the start of the unapplied batch."""
        seek: dict[TopicPartition, int] = {
            tp: records[0].offset for tp, records in unapplied.items() if records
        }
        for (topic, part), offset in gaps.items():
            log.info("projection: re-reading %s/%s from offset %s", topic, part, offset)
            self._accept_gaps[(topic, part)] = offset
            seek[TopicPartition(topic, part)] = offset
        assigned = consumer.assignment()
        for tp, offset in seek.items():
            if tp in assigned:  # a rebalance may have taken it away meanwhile
                consumer.seek(tp, offset)


def _prepare_grouped(
    batches: dict,  # type: ignore[type-arg]
    trusted: bool,
) -> tuple[list[Applied], list[tuple[TopicPartition, Any, str]], list[Statement] | None]:
    """``_prepare``, and for a rebuild (``trusted``) the items' statements too (``grouped``).

    Grouping here, beside the fold, leaves the writer thread little but SQLite's own work, so
    it rarely has to win back the GIL from the thread folding the next batch.
    """
    items, invalid = _prepare(batches, trusted)
    return items, invalid, grouped(items) if trusted else None


def _read_all(read: dict[tuple[str, int], int], ends: dict[TopicPartition, int]) -> bool:
    return all(read.get((tp.topic, tp.partition), 0) >= end for tp, end in ends.items())


def _prepare(
    batches: dict,  # type: ignore[type-arg]
    trusted: bool = False,
) -> tuple[list[Applied], list[tuple[TopicPartition, Any, str]]]:
    """Decode and fold every record; also return the undecodable ones with the reason.

    ``trusted``: try ``replay.applied`` first, which makes the same rows without the event model.
    """
    items: list[Applied] = []
    invalid: list[tuple[TopicPartition, Any, str]] = []
    append = items.append
    fast = replay.applied if trusted else None
    for tp, records in batches.items():
        topic, part = tp.topic, tp.partition
        for record in records:
            if fast is not None:
                try:
                    item = fast(topic, part, record)
                except Exception:  # the full path below says why, or dead-letters it
                    item = None
                if item is not None:
                    append(item)
                    continue
            try:
                event = decode(record.value, record.headers)
            except UnknownEventType:
                append(Applied(topic, part, record.offset))  # newer producers' types: skip
                continue
            except InvalidEvent as exc:
                invalid.append((tp, record, str(exc)))
                append(Applied(topic, part, record.offset))
                continue
            at = Position(topic, part, record.offset, cloudevent_json(record.value, record.headers))
            try:
                ops = fold(event, at)
            except Exception as exc:  # e.g. a foreign producer's value nested too deep to store
                # Dead-lettered like an undecodable record: raising would stop the projection
                # at this record again at every restart.
                invalid.append((tp, record, f"{event.type} cannot be projected: {exc!r}"[:1000]))
                append(Applied(topic, part, record.offset))
                continue
            append(Applied(topic, part, record.offset, ops, getattr(event, "run_id", None)))
    return items, invalid
