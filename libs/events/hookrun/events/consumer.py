"""The consume loop, written once: every consuming service plugs its state and table into it.

A service is a :class:`~hookrun.events.service.Service` (per-partition state and a few hooks)
with a handler table; the :class:`ConsumeLoop` owns the rest: the subscription and its rebalances
(or partitions assigned by hand), replaying each assigned partition from where the service says
it must start up to the log end at assignment, going live there, skipping undecoded the types
the service does not handle, decoding with the dead-letter path, dispatching, skipping the
echoes of events the service applied before publishing them, publishing with retry, committing
only what the service declares safe, backpressure, a periodic sweep, a graceful stop and the
consumer metrics (:mod:`hookrun.events.metrics`). A projection without a handler table takes
the records undecoded (:meth:`~hookrun.events.service.Service.take`) and keeps its own offsets.
The loop runs on anything with the consumer and publisher calls it makes: aiokafka's
(:class:`~hookrun.events.clients.GroupConsumer`, :class:`~hookrun.events.kafka.Publisher`) or
the in-memory broker's of :mod:`hookrun.events.memory` in unit tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any, Generic

from aiokafka import ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError

from hookrun.events import metrics, tracing
from hookrun.events.base import Event
from hookrun.events.clients import Commit, ConsumerClient
from hookrun.events.kafka import KafkaUnavailable, decode_or_dead_letter
from hookrun.events.maps import EventMap
from hookrun.events.service import Handler, Partition, PublisherClient, S, Service
from hookrun.events.topics import named

log = logging.getLogger(__name__)


class Echoes:
    """The ce_ids of events a service applied before publishing them, by partition.

    Their echo from the log changes nothing, so it is neither decoded nor applied again; once
    the partition changes hands it is forgotten, and the echo is replayed like any record.
    """

    def __init__(self) -> None:
        self._ids: dict[bytes, TopicPartition] = {}

    def __len__(self) -> int:
        return len(self._ids)

    def expect(self, tp: TopicPartition, ce_id: bytes) -> None:
        """Remember that the event ``ce_id`` was applied to ``tp``'s state."""
        self._ids[ce_id] = tp

    def seen(self, tp: TopicPartition, ce_id: bytes) -> bool:
        """True (once) for the echo of an event applied to ``tp``'s state."""
        return bool(self._ids.pop(ce_id, None) == tp)

    def forget(self, tp: TopicPartition) -> None:
        """``tp`` changes hands: its state is rebuilt, so its echoes must be applied again."""
        self._ids = {k: v for k, v in self._ids.items() if v != tp}


class ConsumeLoop(Generic[S]):
    """Consumes ``topics`` for one :class:`Service`, in the consumer's group or (``group=False``)
    on every partition of them (or those of ``only``), assigned by hand.

    ``topics`` are logical names (``topics.RUNS``) in the publisher's namespace. Only the types
    ``events`` handles on them are decoded (picked by the ``ce_type`` header; a record without
    one is decoded, and so dead-lettered); ``handlers`` is the table they are dispatched through.
    Without a table (``handlers=None``) the records go undecoded to :meth:`Service.take`.
    Offsets are committed at most every ``commit_every_s`` (None: never, the service keeps
    them), at revocation and at the stop, and only what :meth:`Service.safe` returns.
    """

    def __init__(
        self,
        service: Service[S],
        *,
        consumer: ConsumerClient,
        publisher: PublisherClient | None,
        topics: Sequence[str],
        events: EventMap,
        handlers: Mapping[type[Event], Sequence[Handler[S]]] | None,
        namespace: str | None = None,
        group: bool = True,
        only: Collection[TopicPartition] | None = None,
        max_records: int = 500,
        fetch_timeout_ms: int = 200,
        commit_every_s: float | None = 0.5,
        sweep_every_s: float | None = None,
        max_rereads: int = 3,
    ) -> None:
        """``publisher`` may be None only without a table (nothing is dead-lettered then), and
        ``namespace`` is needed only without a publisher."""
        strays = [cls.type for cls in handlers or () if not events.handles(cls)]
        if strays:
            raise ValueError(f"{events.service}: handlers for types its EventMap lacks: {strays}")
        if handlers is not None and publisher is None:
            raise ValueError(f"{events.service}: a handler table needs a publisher")
        self.service = service
        self.namespace = publisher.namespace if publisher is not None else namespace or ""
        self.topics = [named(t, self.namespace) for t in topics]
        self.parts: dict[TopicPartition, Partition[S]] = {}
        self.echoes = Echoes()
        self._consumer = consumer
        self._publisher = publisher
        self._handlers = handlers
        self._accepted = frozenset(
            cls.type.encode()
            for cls in events.handlers
            if named(cls.topic, self.namespace) in self.topics
        )
        self._group = group
        self._only = None if only is None else frozenset(only)
        self._max_records = max_records
        self._fetch_timeout_ms = fetch_timeout_ms
        self._commit_every_s = commit_every_s
        self._sweep_every_s = sweep_every_s
        self._max_rereads = max_rereads
        self._lock = asyncio.Lock()
        self._committed_at = 0.0
        self._paused = False
        #: Assigned partitions whose replay start could not be read yet: paused until it is.
        self._unopened: set[TopicPartition] = set()
        self._sweeper: asyncio.Task[None] | None = None
        #: The ``group`` label of the loop's metrics: the consuming service.
        self.group = events.service
        self._consumed: dict[str, Any] = {}
        self._acked = metrics.KAFKA_ACK_SECONDS.labels("publish")
        #: The consumer's position per partition, read now and then for the lag only: it is
        #: past control records (transaction markers) that no record moves the position over.
        self._seen: dict[TopicPartition, int] = {}
        self._seen_at = 0.0
        metrics.watch(self)

    @property
    def paused(self) -> bool:
        """True while the service has no room: every partition is paused."""
        return self._paused

    @property
    def ready(self) -> bool:
        """True once partitions are assigned and every one has replayed to its log end."""
        return bool(self.parts) and not self._unopened and all(p.live for p in self.parts.values())

    async def run(self, stopping: asyncio.Event) -> None:
        """Consume until ``stopping`` is set, then stop gracefully (:meth:`close`)."""
        await self.start()
        try:
            while not stopping.is_set():
                await self.step()
        finally:
            await self.close()

    async def start(self) -> None:
        """Start the consumer and join the group (the first :meth:`step` gets the partitions),
        or assign the partitions by hand.

        Raises KafkaError when the topics do not exist (yet) or Kafka cannot be reached.
        """
        await self._consumer.start()
        if self._group:
            self._consumer.subscribe(self.topics, listener=_Listener(self))
        else:
            tps = await self._consumer.partitions_of_topics(self.topics)
            if {tp.topic for tp in tps} != set(self.topics):
                raise KafkaError(f"topics {self.topics} do not all exist yet")
            tps = [tp for tp in tps if self._only is None or tp in self._only]
            self._consumer.assign(tps)
            async with self._lock:
                await self._open(tps)
        if self._sweep_every_s:
            self._sweeper = asyncio.create_task(self._sweep_forever(self._sweep_every_s))

    async def step(self) -> None:
        """Fetch one batch, dispatch it, and commit if the last commit is old enough."""
        if self._unopened:
            async with self._lock:
                self._unopened &= self._consumer.assignment()
                await self._open(list(self._unopened))
        room = await self.service.room()
        self._pause(room == 0)
        limit = self._max_records if room is None else max(1, min(room, self._max_records))
        batches = await self._consumer.getmany(
            timeout_ms=0 if self._paused else self._fetch_timeout_ms, max_records=limit
        )
        async with self._lock:
            await self._handle(batches)
            if time.monotonic() - self._seen_at >= 1.0:
                await self._see_positions()
            if (
                self._commit_every_s is not None
                and time.monotonic() - self._committed_at >= self._commit_every_s
            ):
                await self.commit()

    async def close(self) -> None:
        """Let the service finish (:meth:`Service.drain`), commit, and stop the consumer."""
        try:
            if self._sweeper is not None:
                self._sweeper.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._sweeper
            await self.service.drain()
            async with self._lock:
                await self.commit()
        finally:
            await self._consumer.stop()

    def expect_echo(self, tp: TopicPartition, event: Event) -> None:
        """``event`` was applied to ``tp``'s state before its publishing: skip its echo."""
        if tp in self.parts and named(type(event).topic, self.namespace) == tp.topic:
            self.echoes.expect(tp, event.event_id.encode())

    def seek(self, tp: TopicPartition, offset: int) -> None:
        """Read ``tp`` again from ``offset`` (a service that found a gap in what it took)."""
        part = self.parts.get(tp)
        if part is not None and tp in self._consumer.assignment():
            self._consumer.seek(tp, offset)
            part.position, part.settled = offset, False

    async def publish(self, events: Sequence[Event]) -> None:
        """Append ``events`` (acks=all), sending them again until Kafka acknowledges them."""
        assert self._publisher is not None, "a loop without a publisher publishes nothing"
        delay = 0.2
        while True:
            try:
                started = time.perf_counter()
                await self._publisher.publish(events)
                self._acked.observe(time.perf_counter() - started)
                return
            except KafkaUnavailable as exc:
                log.warning(
                    "kafka did not acknowledge %d events (%s); sending them again in %.1fs",
                    len(events),
                    exc,
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def dispatch(self, tp: TopicPartition, event: Event, offset: int) -> None:
        """Dispatch an event of ``tp`` found outside the fetch (e.g. by a scan of the log)."""
        async with self._lock:
            part = self.parts.get(tp)
            if part is None:
                return
            out = await self._apply(event, offset, part.state)
            if out:
                await self.publish(out)
            await self.service.handled([part])

    async def commit(self, parts: Iterable[Partition[S]] | None = None) -> None:
        """Commit what the service declares safe for each live partition, if it moved."""
        self._committed_at = time.monotonic()
        if self._commit_every_s is None:
            return
        moved: dict[Partition[S], Commit] = {}
        for part in self.parts.values() if parts is None else parts:
            if part.live:
                safe = self.service.safe(part)
                if safe != part.committed:
                    moved[part] = safe
        if not moved:
            return
        try:
            await self._consumer.commit({part.tp: c for part, c in moved.items()})
        except KafkaError as exc:  # e.g. a rebalance under way: the next owner replays more
            log.warning("commit of %s failed: %s", list(moved.values()), exc)
            return
        for part, c in moved.items():
            part.committed = c

    async def _handle(self, batches: Mapping[TopicPartition, Sequence[Any]]) -> None:
        out: list[Event] = []
        touched: list[Partition[S]] = []
        taken: list[tuple[Partition[S], Sequence[Any]]] = []
        for tp, records in batches.items():
            part = self.parts.get(tp)
            if part is not None and records:
                self._count(tp.topic, len(records))
                touched.append(part)
                if self._handlers is None:
                    taken.append((part, _from_position(part, records)))
                else:
                    await self._read(part, records, out)
        if taken:
            spans = self._process_spans(taken) if tracing.enabled() else ()
            await self.service.take(taken)
            for span in spans:
                span.end()
        if out:
            await self.publish(out)
        for part in list(self.parts.values()):
            if not part.live and await self._reached_end(part):
                part.live = True
                log.info("%s: replayed to %s, live", _name(part.tp), part.replay_end)
                await self.service.went_live(part)
                if part not in touched:
                    touched.append(part)
        if touched:
            await self.service.handled(touched)

    async def _read(self, part: Partition[S], records: Sequence[Any], out: list[Event]) -> None:
        position, live, state = part.position, part.live, part.state
        accepted, echoes = self._accepted, self.echoes
        for record in records:
            offset = record.offset
            if offset != position:
                if offset < position:  # read again after a seek back
                    continue
                if not live and not part.settled and self._gap(part, position, offset):
                    break
            part.settled = True
            position = offset + 1
            ce_id = ce_type = None
            for name, value in record.headers:
                if name == "ce_type":
                    ce_type = value
                    if ce_id is not None:
                        break
                elif name == "ce_id":
                    ce_id = value
            if ce_type is not None and ce_type not in accepted:
                continue  # a type the service does not handle: skipped undecoded
            if echoes and ce_id is not None and echoes.seen(part.tp, ce_id):
                continue
            assert self._publisher is not None
            event = await decode_or_dead_letter(self._publisher, record)
            if event is None:
                continue
            if live and tracing.enabled():
                out.extend(await self._apply_traced(event, record, state))
            else:
                out.extend(await self._apply(event, offset, state))
        part.position = position

    async def _apply_traced(self, event: Event, record: Any, state: S) -> list[Event]:
        """:meth:`_apply` in a consumer span, a child of the event's trace context."""
        trace = event.trace
        attributes = tracing.messaging_attributes(
            "process",
            record.topic,
            partition=record.partition,
            offset=record.offset,
            key=record.key,
            message_id=event.event_id.encode(),
            group=self.group,
        )
        attributes["hookrun.event.type"] = type(event).type
        with (
            tracing.span(
                f"process {record.topic}", parent=trace, kind="consumer", attributes=attributes
            ),
            tracing.working_on(trace),
        ):
            return await self._apply(event, record.offset, state)

    def _process_spans(self, taken: Sequence[tuple[Partition[S], Sequence[Any]]]) -> list[Any]:
        """Consumer spans of the live records a projection takes that carry a trace context,
        started now; the caller ends them once the records are taken."""
        spans = []
        for part, records in taken:
            if not part.live:
                continue
            for record in records:
                trace = tracing.of_headers(record.headers)
                if trace is None:
                    continue
                attributes = tracing.messaging_attributes(
                    "process",
                    record.topic,
                    partition=record.partition,
                    offset=record.offset,
                    key=record.key,
                    group=self.group,
                )
                span = tracing.start_span(
                    f"process {record.topic}", parent=trace, kind="consumer", attributes=attributes
                )
                if span is not None:
                    spans.append(span)
        return spans

    async def _apply(self, event: Event, offset: int, state: S) -> list[Event]:
        out: list[Event] = []
        assert self._handlers is not None
        for handler in self._handlers.get(type(event), ()):
            out.extend(await handler(event, offset, state))
        return out

    def _gap(self, part: Partition[S], position: int, offset: int) -> bool:
        """A replay's first record since the seek is ``offset``, not ``position``: True to read
        again from the position.

        Such a gap can be a fetch that raced the seek to the replay start, and replaying on
        would miss records. After a few tries the gap is taken as real (compaction, control
        records).
        """
        if part.rereads < self._max_rereads:
            part.rereads += 1
            log.warning(
                "%s: replay got offset %s at position %s: reading again",
                _name(part.tp),
                offset,
                position,
            )
            self._consumer.seek(part.tp, position)
            part.settled = False
            return True
        log.warning("%s: replay skipped offsets %s..%s", _name(part.tp), position, offset - 1)
        return False

    def positions(self) -> list[tuple[str, int, int, int | None, bool]]:
        """``(topic, partition, position, log end or None, live)`` per partition, for the
        metrics; the log end is the one the consumer's last fetch saw."""
        assigned = self._consumer.assignment()
        return [
            (
                tp.topic,
                tp.partition,
                max(part.position, self._seen.get(tp, 0)),
                self._consumer.highwater(tp) if tp in assigned else None,
                part.live,
            )
            for tp, part in self.parts.items()
        ]

    def _count(self, topic: str, n: int) -> None:
        counter = self._consumed.get(topic)
        if counter is None:
            counter = self._consumed[topic] = metrics.CONSUMED.labels(self.group, topic)
        counter.inc(n)

    async def _see_positions(self) -> None:
        self._seen_at = time.monotonic()
        assigned = self._consumer.assignment()
        self._seen = {
            tp: await self._consumer.position(tp)
            for tp, part in self.parts.items()
            if part.live and tp in assigned
        }

    async def _reached_end(self, part: Partition[S]) -> bool:
        # The position can pass the last record read (control records, compaction).
        part.position = max(part.position, await self._consumer.position(part.tp))
        return part.position >= part.replay_end

    def _pause(self, full: bool) -> None:
        """Pause every assigned partition while ``full`` (again after a rebalance), else resume."""
        if full:
            self._consumer.pause(*self._consumer.assignment())
        elif self._paused:
            self._consumer.resume(*(self._consumer.assignment() - self._unopened))
        self._paused = full

    async def _assigned(self, assigned: Sequence[TopicPartition]) -> None:
        new = [tp for tp in assigned if tp not in self.parts]
        if new:
            async with self._lock:
                await self._open(new)

    async def _open(self, tps: list[TopicPartition]) -> None:
        """Seek each new partition to where the service says its replay starts.

        Where the offsets cannot be read now (the broker is away), the partitions stay paused
        and are tried again at the next step: fetching them unopened would lose their records.
        """
        if not tps:
            return
        try:
            committed = await self._consumer.committed_offsets(tps) if self._group else {}
            begins = await self._consumer.beginning_offsets(tps)
            ends = await self._consumer.end_offsets(tps)
            starts = {tp: await self.service.replay_start(tp, committed.get(tp)) for tp in tps}
        except Exception as exc:  # Kafka or the service's store is away
            log.warning("cannot read where %s start (%r); trying again", sorted(tps), exc)
            self._unopened.update(tps)
            self._consumer.pause(*tps)
            return
        self._unopened.difference_update(tps)
        for tp in tps:
            start = starts[tp]
            start = begins[tp] if start is None else min(max(start, begins[tp]), ends[tp])
            self._consumer.seek(tp, start)
            self.echoes.forget(tp)
            self.parts[tp] = Partition(
                tp, self.service.open(tp), start, ends[tp], committed=committed.get(tp)
            )
            log.info("%s: replaying %s..%s", _name(tp), start, ends[tp])
        if not self._paused:
            self._consumer.resume(*tps)

    async def _revoked(self, revoked: Sequence[TopicPartition]) -> None:
        """Commit revoked partitions one last time, then let the service drop them.

        The commit comes first: what is safe to commit is derived from the state the service
        drops.
        """
        async with self._lock:
            self._unopened.difference_update(revoked)
            parts = [self.parts[tp] for tp in revoked if tp in self.parts]
            await self.commit(parts)
            for part in parts:
                del self.parts[part.tp]
                await self.service.revoked(part)
                self.echoes.forget(part.tp)
                log.info("%s: revoked", _name(part.tp))

    async def _sweep_forever(self, every_s: float) -> None:
        while True:
            await asyncio.sleep(every_s)
            try:
                async with self._lock:
                    await self.service.sweep()
                    await self.commit()
            except Exception:
                log.exception("sweep failed")


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka is untyped
    def __init__(self, loop: ConsumeLoop[Any]) -> None:
        self._loop = loop

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self._loop._revoked(list(revoked))

    async def on_partitions_assigned(self, assigned: Any) -> None:
        await self._loop._assigned(list(assigned))


def _from_position(part: Partition[Any], records: Sequence[Any]) -> Sequence[Any]:
    """``records`` from the partition's position on (a fetch may overlap a seek back), and the
    position moved past them."""
    if records[0].offset < part.position:
        records = [r for r in records if r.offset >= part.position]
    if records:
        part.position = records[-1].offset + 1
    return records


def _name(tp: TopicPartition) -> str:
    return f"{tp.topic}/{tp.partition}"
