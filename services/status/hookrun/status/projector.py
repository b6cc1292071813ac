"""The projection: reads hookrun.runs and hookrun.triggers and applies batches to the store.

With SQLite each instance is a full replica (manual assignment of every partition); with
PostgreSQL the instances form one consumer group and share the database. Either way the
projection starts at the offsets stored in the database and never relies on Kafka's committed
offsets.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Sequence
from functools import partial
from typing import Any, TypeVar

from aiokafka import TopicPartition
from aiokafka.errors import KafkaError

from hookrun.events import topics
from hookrun.events.clients import Commit, ConsumerClient, GroupConsumer
from hookrun.events.codec import InvalidEvent, UnknownEventType, decode
from hookrun.events.consumer import ConsumeLoop
from hookrun.events.kafka import Publisher, consumer_settings, dead_letter
from hookrun.events.service import Partition, Service
from hookrun.status import metrics, replay
from hookrun.status.projection import EVENTS, Position, cloudevent_json, fold
from hookrun.status.statements import Statement
from hookrun.status.store import Applied, ApplyResult, SqlStore, grouped

log = logging.getLogger(__name__)

T = TypeVar("T")


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


#: See Projector.__init__; a run's events are about 3 KiB.
FETCH_MIN_BYTES = 64 * 1024
#: The longest wait between two tries to store a batch (or dead-letter a record) that failed.
MAX_RETRY_DELAY_S = 30.0


class Projector(Service[None]):
    """Folds the run and trigger-log topics into a store, one DB transaction per batch.

    A service of the shared consume loop without a handler table: it takes each fetch
    undecoded, folds it in a worker thread and stores it with the offsets it reaches.
    """

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
        consumer: Callable[[], ConsumerClient] | None = None,
    ) -> None:
        """``partitions``: project only these (a rebuild's share); else every partition.

        ``fold_in_thread=False``: decode and fold on the event loop. For a rebuild process that
        has no spare core: the thread hand-offs would then only cost CPU. ``consumer`` makes
        the consumer of each connection attempt (aiokafka's unless given).
        """
        self.store = store
        self.group = group
        self.namespace = namespace
        self.progress = progress or Progress()
        self.running = False
        self.applied = 0
        #: The next offset this projector stored per (topic, partition).
        self.positions: dict[tuple[str, int], int] = {}
        #: Why the last try to store a batch or dead-letter a record failed; None once one works.
        self.failing: str | None = None
        self.loop: ConsumeLoop[None] | None = None
        settings = consumer_settings(bootstrap, "status", group=group)
        # The broker holds a fetch until this much is there or fetch_max_wait_ms (20 ms) passed:
        # at a moderate rate the projection then takes a batch per 20 ms instead of one per
        # record or two (each its own fetch, thread hop and transaction).
        settings["fetch_min_bytes"] = FETCH_MIN_BYTES
        self._consumer = consumer or (lambda: GroupConsumer(**settings))
        self._publisher = publisher
        self._batch_records = batch_records
        self._accept_gaps: dict[tuple[str, int], int] = {}
        #: Fold records straight from their JSON (``replay``): for a rebuild, which replays
        #: records validated when they were written.
        self._trusted = trusted
        self._only = None if partitions is None else frozenset(partitions)
        self._fold_in_thread = fold_in_thread
        self._writing: asyncio.Task[ApplyResult] | None = None
        self._read_to: dict[TopicPartition, int] | None = None
        self._read: dict[tuple[str, int], int] = {}

    @property
    def assignment(self) -> list[TopicPartition]:
        """The partitions this instance projects now."""
        return sorted(self.loop.parts) if self.loop is not None else []

    @property
    def ready(self) -> bool:
        """True once every partition was read to its end at assignment and storing works."""
        return self.loop is not None and self.loop.ready and self.failing is None

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

        ``read_to`` (a rebuild's log ends): once every partition was read up to there, wait
        for the write in flight instead of fetching again.
        """
        self._read_to, self._read = read_to, {}
        loop = self.loop = await self._connect()
        self.running = True
        try:
            while until is None or not until():
                await loop.step()
            await self.drain()
        finally:
            self.running = False
            await loop.close()
            self.loop = None

    async def _connect(self) -> ConsumeLoop[None]:
        delay = 0.2
        while True:
            loop = ConsumeLoop(
                self,
                consumer=self._consumer(),
                publisher=None,
                namespace=self.namespace,
                topics=[topics.RUNS, topics.TRIGGERS],
                events=EVENTS,
                handlers=None,
                group=self.group is not None,
                only=self._only,
                max_records=self._batch_records,
                commit_every_s=None,  # the offsets are stored with the rows
            )
            try:
                await loop.start()
                return loop
            except KafkaError as exc:
                log.warning("projection: waiting for kafka (%s); retrying in %.1fs", exc, delay)
                with contextlib.suppress(Exception):
                    await loop.close()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    # -- the loop's hooks -----------------------------------------------------------------

    def open(self, tp: TopicPartition) -> None:
        return None

    async def replay_start(self, tp: TopicPartition, committed: Commit | None) -> int | None:
        """Where the database says this projection stopped (never Kafka's committed offsets).

        Offset 0 on a log whose start was deleted starts at the earliest record; the gap check
        then accepts that start.
        """
        self._accept_gaps.pop((tp.topic, tp.partition), None)  # a new read: check its start
        return (await self.store.offsets(tp.topic)).get(tp.partition, 0)

    async def room(self) -> int | None:
        """Nothing more to fetch once a rebuild read everything: wait for the last write."""
        if self._writing is not None and self._read_all():
            await asyncio.wait({self._writing}, timeout=1.0)
        if self._writing is not None and self._writing.done():
            await self._collect({})
        return 0 if self._read_all() else None

    async def take(self, batch: Sequence[tuple[Partition[None], Sequence[Any]]]) -> None:
        batches = {part.tp: records for part, records in batch if records}
        if not batches:
            return
        if self._read_to is not None:
            for tp, records in batches.items():
                self._read[(tp.topic, tp.partition)] = records[-1].offset + 1
        # Decoding and folding are pure CPU work: a worker thread does them so that the event
        # loop keeps serving requests and fetching meanwhile (unless there is no core to spare
        # for it, see fold_in_thread).
        if self._fold_in_thread:
            prepared = await asyncio.to_thread(_prepare_grouped, batches, self._trusted)
        else:
            prepared = _prepare_grouped(batches, self._trusted)
        if self._writing is not None and await self._collect(batches):
            return
        items, invalid, grouped = prepared
        await self._dead_letter(invalid)
        # The newest record's append time (ms), for the projection's delay.
        newest = max(records[-1].timestamp for records in batches.values())
        self._writing = asyncio.create_task(self._write(items, grouped, newest))

    async def drain(self) -> None:
        """Let the open transaction finish (at most one batch) rather than abandon it."""
        if self._writing is not None:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await self._collect({})

    # -- storing --------------------------------------------------------------------------

    def _read_all(self) -> bool:
        ends = self._read_to
        return ends is not None and all(
            self._read.get((tp.topic, tp.partition), 0) >= end for tp, end in ends.items()
        )

    async def _collect(self, unapplied: dict[TopicPartition, Sequence[Any]]) -> bool:
        """Wait for the write in flight; True if it found gaps (``unapplied`` is read again)."""
        assert self._writing is not None
        writing, self._writing = self._writing, None
        result = await writing
        if not result.gaps:
            return False
        self._reread(result.gaps, unapplied)
        self._read.clear()  # read again from where the store stands
        return True

    async def _dead_letter(self, invalid: list[tuple[TopicPartition, Any, str]]) -> None:
        if self._publisher is None:
            return
        for tp, record, reason in invalid:
            log.warning(
                "dead-lettering %s/%s@%s: %s", tp.topic, tp.partition, record.offset, reason
            )
            await self._until_done(
                partial(dead_letter, self._publisher, record, reason), "dead-lettering a record"
            )

    async def _write(
        self, items: list[Applied], grouped: list[Statement] | None, newest_ms: int = 0
    ) -> ApplyResult:
        result = await self._until_done(
            partial(self.store.apply, items, self._accept_gaps, grouped=grouped),
            f"storing {len(items)} records",
        )
        self.applied += result.applied
        metrics.APPLIED.inc(result.applied)
        if newest_ms > 0:
            metrics.DELAY_SECONDS.observe(max(0.0, time.time() - newest_ms / 1000))
        self.positions.update(result.offsets)
        # The next fetch continues this one: a gap where it starts is the log's own (control
        # records of the gateway's transactions), not records this store never got.
        self._accept_gaps.update(result.offsets)
        self.progress.notify()
        return result

    async def _until_done(self, attempt: Callable[[], Awaitable[T]], what: str) -> T:
        """``attempt()`` until it succeeds: a lost database, a full disk or Kafka away only
        delay the projection, which reports itself not ready meanwhile."""
        delay = 0.5
        while True:
            try:
                result = await attempt()
            except Exception as exc:
                self.failing = f"{what} failed: {exc!r}"
                log.warning("projection: %s; trying again in %.1f s", self.failing, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_RETRY_DELAY_S)
                continue
            self.failing = None
            return result

    def _reread(
        self, gaps: dict[tuple[str, int], int], unapplied: dict[TopicPartition, Sequence[Any]]
    ) -> None:
        """Seek back to the stored offset of each gap, and to the start of the unapplied batch."""
        assert self.loop is not None
        seek: dict[TopicPartition, int] = {
            tp: records[0].offset for tp, records in unapplied.items() if records
        }
        for (topic, part), offset in gaps.items():
            log.info("projection: re-reading %s/%s from offset %s", topic, part, offset)
            self._accept_gaps[(topic, part)] = offset
            seek[TopicPartition(topic, part)] = offset
        for tp, offset in seek.items():
            self.loop.seek(tp, offset)  # unless a rebalance took it away meanwhile


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
