"""An in-memory broker with the consumer and publisher calls the consume loop makes (tests).

Like FastStream's TestKafkaBroker or arroyo's LocalBroker: the same service and the same
:class:`~hookrun.events.consumer.ConsumeLoop` run on it in unit tests and on Kafka in integration
tests. It keeps topics with partitions, appends records (placed by key as Kafka places them),
and has consumer groups with committed offsets and metadata and eager rebalances that call each
member's listener: revocation of everything, then the new assignment.
"""

from __future__ import annotations

import asyncio
import bisect
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiokafka import ConsumerRecord, TopicPartition
from aiokafka.errors import IllegalStateError, UnknownTopicOrPartitionError

from hookrun.events import topics
from hookrun.events.base import Event
from hookrun.events.clients import Commit
from hookrun.events.codec import Record, encode
from hookrun.events.kafka import KafkaUnavailable, KeyHashPartitioner

if TYPE_CHECKING:
    from hookrun.events.clients import ConsumerClient
    from hookrun.events.service import PublisherClient


@dataclass
class _Log:
    """One partition: its records in offset order (a compacted one has gaps)."""

    records: list[Any] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)
    end: int = 0

    @property
    def start(self) -> int:
        return self.offsets[0] if self.offsets else self.end


@dataclass
class _Group:
    members: list[MemoryConsumer] = field(default_factory=list)
    committed: dict[TopicPartition, Commit] = field(default_factory=dict)
    #: Bumped by every join and leave; a member that saw an older one rebalances the group.
    generation: int = 0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class MemoryBroker:
    """Topics, partitions and consumer groups held in memory."""

    def __init__(self) -> None:
        self._logs: dict[str, list[_Log]] = {}
        self._groups: dict[str, _Group] = {}
        self._partitioner = KeyHashPartitioner()
        self._appended = asyncio.Event()

    def create_topic(self, name: str, partitions: int = 1) -> None:
        """Create ``name`` with ``partitions`` partitions unless it exists."""
        self._logs.setdefault(name, [_Log() for _ in range(partitions)])

    def create_topics(self, namespace: str = topics.NAMESPACE, partitions: int = 6) -> None:
        """Create every topic hookrun needs in ``namespace``, as ``ensure_topics`` does."""
        for spec in topics.specs(partitions, namespace=namespace):
            self.create_topic(spec.name, spec.partitions)

    def partitions(self, topic: str) -> list[TopicPartition]:
        """Every partition of ``topic`` (none of a topic that does not exist)."""
        return [TopicPartition(topic, p) for p in range(len(self._logs.get(topic, ())))]

    def append(
        self,
        topic: str,
        value: bytes | None,
        *,
        key: bytes | None = None,
        headers: Sequence[tuple[str, bytes]] = (),
        partition: int | None = None,
    ) -> tuple[TopicPartition, int]:
        """Append a record (to the key's partition unless given); return where it went.

        Raises UnknownTopicOrPartitionError for a topic that was not created.
        """
        logs = self._logs.get(topic)
        if logs is None:
            raise UnknownTopicOrPartitionError(topic)
        if partition is None:
            every = list(range(len(logs)))
            partition = self._partitioner(key, every, every)
        log = logs[partition]
        offset = log.end
        log.records.append(
            ConsumerRecord(
                topic,
                partition,
                offset,
                int(time.time() * 1000),
                0,
                key,
                value,
                None,
                len(key or b""),
                len(value or b""),
                tuple(headers),
            )
        )
        log.offsets.append(offset)
        log.end += 1
        self._appended.set()
        self._appended = asyncio.Event()
        return TopicPartition(topic, partition), offset

    def records(self, topic: str, partition: int | None = None) -> list[Any]:
        """The records of one partition of ``topic``, or of all of them partition by partition."""
        logs = self._logs.get(topic, [])
        chosen = logs if partition is None else [logs[partition]]
        return [record for log in chosen for record in log.records]

    def remove(self, tp: TopicPartition, offsets: Iterable[int]) -> None:
        """Drop records as compaction would: their offsets become gaps, the log end stays."""
        log = self._log(tp)
        doomed = set(offsets)
        kept = [(o, r) for o, r in zip(log.offsets, log.records, strict=True) if o not in doomed]
        log.offsets = [o for o, _ in kept]
        log.records = [r for _, r in kept]

    def committed(self, group: str, tp: TopicPartition) -> Commit | None:
        """What ``group`` committed for ``tp``, if anything."""
        return self._group(group).committed.get(tp)

    def consumer(self, group: str | None = None) -> MemoryConsumer:
        """A consumer in ``group`` (None: assigned by hand, no commits)."""
        return MemoryConsumer(self, group)

    def publisher(
        self, namespace: str = topics.NAMESPACE, service: str = "test"
    ) -> MemoryPublisher:
        """A publisher that appends to this broker, renaming topics into ``namespace``."""
        return MemoryPublisher(self, namespace, service)

    async def rebalance(self, group: str) -> None:
        """Rebalance ``group`` now (as when a member rejoins): revoke all, assign again."""
        state = self._group(group)
        async with state.lock:
            state.generation += 1
            await self._rebalance(state)

    async def _sync(self, member: MemoryConsumer) -> None:
        state = self._group(member.group)
        async with state.lock:
            if member.generation != state.generation:
                await self._rebalance(state)

    async def _rebalance(self, state: _Group) -> None:
        members = list(state.members)
        for member in members:
            await member._revoke_all()
        wanted = sorted({tp for m in members for t in m.topics for tp in self.partitions(t)})
        for i, member in enumerate(members):
            share = wanted[i :: len(members)]
            member.generation = state.generation
            await member._take(share, state.committed)

    def _join(self, member: MemoryConsumer) -> None:
        state = self._group(member.group)
        if member not in state.members:
            state.members.append(member)
        state.generation += 1

    def _leave(self, member: MemoryConsumer) -> None:
        state = self._group(member.group)
        if member in state.members:
            state.members.remove(member)
            state.generation += 1

    def _group(self, name: str | None) -> _Group:
        if name is None:
            raise IllegalStateError("requires a group")
        return self._groups.setdefault(name, _Group())

    def _log(self, tp: TopicPartition) -> _Log:
        logs = self._logs.get(tp.topic)
        index: int = tp.partition
        if logs is None or not 0 <= index < len(logs):
            raise UnknownTopicOrPartitionError(tp)
        return logs[index]

    async def _wait_for_append(self, timeout_s: float) -> None:
        try:
            await asyncio.wait_for(self._appended.wait(), timeout_s)
        except TimeoutError:
            pass


class MemoryConsumer:
    """A consumer of a :class:`MemoryBroker` with aiokafka's calls (those the loop makes)."""

    def __init__(self, broker: MemoryBroker, group: str | None) -> None:
        self.group = group
        self.topics: list[str] = []
        #: The group generation this member was last assigned in.
        self.generation = -1
        self._broker = broker
        self._listener: Any = None
        self._assigned: set[TopicPartition] = set()
        self._positions: dict[TopicPartition, int] = {}
        self._paused: set[TopicPartition] = set()

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        """Leave the group (the others take the partitions at their next fetch)."""
        if self.group is not None and self.topics:
            self._broker._leave(self)
        self._assigned.clear()

    def subscribe(self, topics: list[str], listener: Any = None) -> None:
        """Join the group for ``topics``; the next :meth:`getmany` rebalances it."""
        self.topics = list(topics)
        self._listener = listener
        self._broker._join(self)

    def assign(self, partitions: Iterable[TopicPartition]) -> None:
        """Take ``partitions`` by hand (no group), each at its log start."""
        self._assigned = set(partitions)
        self._positions = {tp: self._broker._log(tp).start for tp in self._assigned}

    def assignment(self) -> set[TopicPartition]:
        return set(self._assigned)

    async def partitions_of_topics(self, topics: list[str]) -> list[TopicPartition]:
        return [tp for topic in topics for tp in self._broker.partitions(topic)]

    async def getmany(
        self, *partitions: TopicPartition, timeout_ms: int = 0, max_records: int | None = None
    ) -> dict[TopicPartition, list[Any]]:
        """Records from the position of each assigned, unpaused partition (or of ``partitions``),
        at most ``max_records`` in all; waits up to ``timeout_ms`` for an append if none."""
        if self.group is not None and self.topics:
            await self._broker._sync(self)
        batches = self._fetch(partitions, max_records)
        if not batches and timeout_ms > 0:
            await self._broker._wait_for_append(timeout_ms / 1000)
            batches = self._fetch(partitions, max_records)
        return batches

    def seek(self, partition: TopicPartition, offset: int) -> None:
        self._check(partition)
        self._positions[partition] = offset

    async def seek_to_beginning(self, *partitions: TopicPartition) -> None:
        for tp in partitions or tuple(self._assigned):
            self.seek(tp, self._broker._log(tp).start)

    async def position(self, partition: TopicPartition) -> int:
        self._check(partition)
        return self._positions[partition]

    async def beginning_offsets(
        self, partitions: list[TopicPartition]
    ) -> dict[TopicPartition, int]:
        return {tp: self._broker._log(tp).start for tp in partitions}

    async def end_offsets(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: self._broker._log(tp).end for tp in partitions}

    async def committed_offsets(
        self, partitions: list[TopicPartition]
    ) -> dict[TopicPartition, Commit]:
        committed = self._broker._group(self.group).committed
        return {tp: committed[tp] for tp in partitions if tp in committed}

    async def commit(
        self, offsets: Mapping[TopicPartition, Commit | tuple[int, str] | int]
    ) -> None:
        """Store ``offsets`` (with metadata) for the group; only partitions this member owns."""
        state = self._broker._group(self.group)
        stray = [tp for tp in offsets if tp not in self._assigned]
        if stray:
            raise IllegalStateError(f"not assigned to this member: {stray}")
        for tp, value in offsets.items():
            state.committed[tp] = Commit(value) if isinstance(value, int) else Commit(*value)

    def pause(self, *partitions: TopicPartition) -> None:
        self._paused.update(partitions)

    def resume(self, *partitions: TopicPartition) -> None:
        self._paused.difference_update(partitions)

    def paused(self) -> set[TopicPartition]:
        return set(self._paused)

    def highwater(self, partition: TopicPartition) -> int | None:
        """The partition's log end while it is assigned (aiokafka: as its last fetch saw it)."""
        return self._broker._log(partition).end if partition in self._assigned else None

    def _fetch(
        self, partitions: Sequence[TopicPartition], max_records: int | None
    ) -> dict[TopicPartition, list[Any]]:
        left = max_records or 500
        batches: dict[TopicPartition, list[Any]] = {}
        for tp in sorted(partitions or self._assigned - self._paused):
            if left <= 0:
                break
            log = self._broker._log(tp)
            position = self._positions[tp]
            i = bisect.bisect_left(log.offsets, position)
            records = log.records[i : i + left]
            if records:
                batches[tp] = records
                left -= len(records)
                self._positions[tp] = records[-1].offset + 1
            elif position < log.end:  # only gaps up to the end (compaction)
                self._positions[tp] = log.end
        return batches

    def _check(self, partition: TopicPartition) -> None:
        if partition not in self._assigned:
            raise IllegalStateError(f"{partition} is not assigned")

    async def _revoke_all(self) -> None:
        # As in Kafka, the member still owns the partitions (and may commit) in the listener.
        if self._listener is not None:
            await self._listener.on_partitions_revoked(set(self._assigned))
        self._assigned.clear()
        self._positions.clear()
        self._paused.clear()

    async def _take(
        self, partitions: Sequence[TopicPartition], committed: Mapping[TopicPartition, Commit]
    ) -> None:
        self._assigned = set(partitions)
        for tp in partitions:  # auto_offset_reset=earliest where nothing was committed
            found = committed.get(tp)
            self._positions[tp] = found.offset if found else self._broker._log(tp).start
        if self._listener is not None:
            await self._listener.on_partitions_assigned(set(partitions))


class MemoryPublisher:
    """A publisher to a :class:`MemoryBroker`: the calls of :class:`~hookrun.events.kafka.Publisher`.

    Set :attr:`failures` to make that many of the next sends raise KafkaUnavailable (an outage).
    """

    def __init__(self, broker: MemoryBroker, namespace: str, service: str) -> None:
        self.namespace = namespace
        self.source = f"hookrun/{service}/memory"
        self.failures = 0
        self._broker = broker

    @property
    def ready(self) -> bool:
        return True

    async def start(self, *, wait: bool = False) -> None:
        pass

    async def stop(self) -> None:
        pass

    def record(self, event: Event) -> Record:
        """``event`` encoded as :meth:`publish` appends it (stamped with this publisher)."""
        return encode(event, source=self.source if event.source == "hookrun" else None)

    async def send_record(self, record: Record) -> asyncio.Future[Any]:
        """Append ``record`` now; return an acknowledged future."""
        if self.failures > 0:
            self.failures -= 1
            raise KafkaUnavailable("the in-memory broker is unavailable")
        where = self._broker.append(
            topics.named(record.topic, self.namespace),
            record.value,
            key=record.key,
            headers=record.headers,
        )
        acked: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        acked.set_result(where)
        return acked

    async def wait(self, futures: Sequence[asyncio.Future[Any]]) -> None:
        for future in futures:
            await future

    async def publish(self, events: Sequence[Event]) -> None:
        """Append ``events``; raise KafkaUnavailable while :attr:`failures` is set."""
        await self.wait([await self.send_record(self.record(event)) for event in events])


if TYPE_CHECKING:  # the in-memory clients make every call the loop makes

    def _fits(c: MemoryConsumer, p: MemoryPublisher) -> tuple[ConsumerClient, PublisherClient]:
        return c, p
