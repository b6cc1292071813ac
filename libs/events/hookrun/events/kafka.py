"""Kafka I/O for hookrun events: the publisher, the dead-letter path and topic tables.

Client settings are in :mod:`hookrun.events.clients`, topic administration in
:mod:`hookrun.events.admin` and the consume loop in :mod:`hookrun.events.consumer`; the names
that services import from here are re-exported (see ``__all__``). Only these Kafka modules of
``hookrun.events`` import aiokafka, so importing the events needs no broker client.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import socket
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError, KafkaTimeoutError
from aiokafka.partitioner import DefaultPartitioner

from hookrun.events import metrics, topics, tracing
from hookrun.events.admin import (
    delete_topics,
    ensure_topics,
    ensure_topics_forever,
    partitions_of,
    topic_names,
    wait_for_group_coordination,
)
from hookrun.events.base import Event
from hookrun.events.clients import (
    admin_settings,
    consumer_settings,
    partitions_of_topics,
    producer_settings,
)
from hookrun.events.codec import InvalidEvent, Record, UnknownEventType, decode, encode
from hookrun.events.murmur import murmur2
from hookrun.events.security import security_settings

#: Re-exported names (admin, clients) are imported from here by the gateway, runner and status
#: services, hookrun.dev, the benchmarks and tests.
__all__ = [
    "KafkaUnavailable",
    "KeyHashPartitioner",
    "Publisher",
    "RecordSender",
    "TopicTable",
    "admin_settings",
    "consumer_settings",
    "dead_letter",
    "decode_or_dead_letter",
    "delete_topics",
    "ensure_topics",
    "ensure_topics_forever",
    "partitions_of",
    "partitions_of_topics",
    "producer_settings",
    "security_settings",
    "topic_names",
    "wait_for_group_coordination",
]

log = logging.getLogger(__name__)


class KafkaUnavailable(Exception):
    """The broker did not acknowledge in time; nothing was promised to the caller."""


class KeyHashPartitioner:
    """aiokafka's default partitioning (murmur2 of the key, as the Java client), hashes cached.

    Every event of an aggregate carries the same key, and aiokafka's murmur2 is pure Python,
    costly enough to show in a profile. The cache is bounded (cleared when full); keyless
    records go to a random partition as with the default partitioner.
    """

    def __init__(self, max_keys: int = 65_536) -> None:
        self._hashes: dict[bytes, int] = {}
        self._max_keys = max_keys

    def __call__(self, key: bytes | None, all_partitions: list[int], available: list[int]) -> int:
        if key is None:
            return int(DefaultPartitioner()(key, all_partitions, available))
        h = self._hashes.get(key)
        if h is None:
            if len(self._hashes) >= self._max_keys:
                self._hashes.clear()
            h = self._hashes[key] = murmur2(key) & 0x7FFFFFFF
        return all_partitions[h % len(all_partitions)]


class Publisher:
    """Sends events with an idempotent acks=all producer; starts even when the broker is down.

    The producer is (re)started in the background, so an HTTP service can come up and answer
    503 while Kafka is unreachable instead of refusing to start.
    """

    def __init__(
        self,
        bootstrap: str,
        service: str,
        *,
        send_timeout_s: float = 10.0,
        namespace: str = topics.NAMESPACE,
        linger_ms: int = 0,
        first: Sequence[Event] = (),
    ) -> None:
        """``first`` are acknowledged before the publisher counts as connected, so nothing it
        sends can precede them (a service's ConfigRecorded before any launch naming that
        version). They are encoded here: one that cannot be recorded raises at once.
        """
        self.namespace = namespace
        self._settings = producer_settings(
            bootstrap, service, request_timeout_ms=int(send_timeout_s * 1000), linger_ms=linger_ms
        )
        self._send_timeout_s = send_timeout_s
        self._partitioner = KeyHashPartitioner()
        self._producer: AIOKafkaProducer | None = None
        self._starter: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self.source = f"hookrun/{service}/{socket.gethostname()}"
        self._first = [self.record(event) for event in first]

    @property
    def ready(self) -> bool:
        """True once the producer is connected, and false again while Kafka does not
        acknowledge (from a failed wait to the next acknowledged one)."""
        return self._ready.is_set()

    async def start(self, *, wait: bool = False) -> None:
        """Begin connecting; with ``wait``, return only once connected."""
        if self._starter is None:
            self._starter = asyncio.create_task(self._connect())
        if wait:
            await self._ready.wait()

    async def _reconnect(self, broken: AIOKafkaProducer) -> None:
        with contextlib.suppress(Exception):
            await broken.stop()
        await self._connect()

    async def _connect(self) -> None:
        delay = 0.2
        while True:
            producer = AIOKafkaProducer(**self._settings, partitioner=self._partitioner)
            try:
                await producer.start()
                await self._send_first(producer)
            except (KafkaError, TimeoutError) as exc:
                log.warning("kafka not reachable yet (%r); retrying in %.1fs", exc, delay)
                with contextlib.suppress(Exception):
                    await producer.stop()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            self._producer = producer
            self._ready.set()
            return

    async def _send_first(self, producer: AIOKafkaProducer) -> None:
        if not self._first:
            return
        acks = [
            await producer.send(
                topics.named(r.topic, self.namespace), r.value, key=r.key, headers=r.headers
            )
            for r in self._first
        ]
        async with asyncio.timeout(self._send_timeout_s + 1):
            await asyncio.gather(*acks)

    async def stop(self) -> None:
        """Flush what is pending and close the producer."""
        if self._starter is not None:
            self._starter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._starter
        if self._producer is not None:
            await self._producer.stop()

    async def send_record(self, record: Record) -> asyncio.Future[Any]:
        """Queue one record; return the future of its acknowledgement.

        aiokafka appends it to the partition's open batch, so records sent while a produce
        request is in flight leave together in the next one. (Not our own batches with
        ``send_batch``: aiokafka keeps one request in flight per broker, so held-back batches
        would wait a round trip each; see docs/architecture.md.)
        Raises :class:`KafkaUnavailable` when the producer is not connected.
        """
        if self._producer is None:
            raise KafkaUnavailable("kafka producer is not connected")
        try:
            return await send(self._producer, topics.named(record.topic, self.namespace), record)
        except KafkaError as exc:
            raise KafkaUnavailable(str(exc)) from exc

    def record(self, event: Event) -> Record:
        """Return ``event`` encoded as :meth:`publish` sends it (stamped with this publisher)."""
        return encode(event, source=self.source if event.source == "hookrun" else None)

    async def publish(self, events: Sequence[Event]) -> None:
        """Append ``events`` and return once Kafka acknowledged all of them (acks=all).

        Events are sent concurrently so they share batches; per-key order is kept by the
        idempotent producer. Raises :class:`KafkaUnavailable` when not acknowledged in time.
        """
        futures = []
        for event in events:
            source = self.source if event.source == "hookrun" else None
            futures.append(await self.send_record(encode(event, source=source)))
        await self.wait(futures)

    async def wait(self, futures: Sequence[asyncio.Future[Any]]) -> None:
        """Wait for acknowledgements; raise :class:`KafkaUnavailable` on error or timeout."""
        if not futures:
            return
        try:
            async with asyncio.timeout(self._send_timeout_s + 1):
                # One future (a launch's TriggerLaunched) needs no gathering future around it.
                if len(futures) == 1:
                    await futures[0]
                else:
                    await asyncio.gather(*futures)
        except (KafkaError, TimeoutError) as exc:
            self._ready.clear()
            if _breaks_the_producer(exc) and self._producer is not None:
                # E.g. OutOfOrderSequenceNumber after a broker restart: this producer's sends
                # would fail for ever. A new one (a new producer id) takes over; sends fail as
                # "not connected" meanwhile, and callers send again as for any outage.
                log.warning("kafka refused the producer (%r): connecting a new one", exc)
                broken, self._producer = self._producer, None
                self._starter = asyncio.create_task(self._reconnect(broken))
            raise KafkaUnavailable(f"kafka did not acknowledge: {exc!r}") from exc
        if not self._ready.is_set():
            self._ready.set()


async def send(producer: AIOKafkaProducer, topic: str, record: Record) -> asyncio.Future[Any]:
    """Hand ``record`` to ``producer`` for ``topic``; return the future of its acknowledgement.

    With spans on, a producer span covers a record of a trace until its acknowledgement (or
    the error).
    """
    span = tracing.send_span(topic, record.key, record.headers) if tracing.enabled() else None
    if span is None:
        acked: asyncio.Future[Any] = await producer.send(
            topic, record.value, key=record.key, headers=record.headers
        )
        return acked
    try:
        acked = await producer.send(topic, record.value, key=record.key, headers=record.headers)
    except BaseException as exc:
        tracing.fail(span, repr(exc))
        span.end()
        raise
    acked.add_done_callback(functools.partial(tracing.sent, span))
    return acked


def _breaks_the_producer(exc: BaseException) -> bool:
    """Whether no later send through the same producer can succeed (an error Kafka does not
    mark retriable, as a broken idempotence sequence), unlike a timeout or a lost leader."""
    if isinstance(exc, TimeoutError | KafkaTimeoutError):
        return False
    return isinstance(exc, KafkaError) and not getattr(exc, "retriable", False)


class RecordSender(Protocol):
    """What the dead-letter path needs of a publisher: :class:`Publisher` or an in-memory one."""

    namespace: str

    async def send_record(self, record: Record) -> asyncio.Future[Any]: ...

    async def wait(self, futures: Sequence[asyncio.Future[Any]]) -> None: ...


async def dead_letter(
    publisher: RecordSender, record: ConsumerRecord[Any, Any], reason: str
) -> None:
    """Copy an undecodable record to ``<topic>.dlq`` with where it came from and why."""
    headers = [
        *(record.headers or ()),
        ("dlq_reason", reason.encode()[:1000]),
        ("dlq_topic", record.topic.encode()),
        ("dlq_partition", str(record.partition).encode()),
        ("dlq_offset", str(record.offset).encode()),
    ]
    # record.topic is the physical name already: map it back so send_record's renaming is a no-op.
    logical = topics.NAMESPACE + record.topic[len(publisher.namespace) :]
    dlq = Record(topics.dlq(logical), record.key or b"", record.value or b"", headers)
    await publisher.wait([await publisher.send_record(dlq)])
    metrics.DEAD_LETTERED.labels(record.topic).inc()


_UNKNOWN_TYPES_SEEN: set[str] = set()


async def decode_or_dead_letter(
    publisher: RecordSender, record: ConsumerRecord[Any, Any]
) -> Event | None:
    """Decode ``record``; send it to the DLQ (and return None) when it cannot be decoded.

    Unknown event types are logged and skipped (None), so consumers keep working when newer
    producers add types.
    """
    try:
        return decode(record.value, record.headers)
    except UnknownEventType as exc:
        if exc.type not in _UNKNOWN_TYPES_SEEN:  # once per type: a newer producer's events
            _UNKNOWN_TYPES_SEEN.add(exc.type)
            log.warning(
                "skipping events of unknown type %s (first at %s/%s@%s); is this service older?",
                exc.type,
                record.topic,
                record.partition,
                record.offset,
            )
    except InvalidEvent as exc:
        log.warning(
            "dead-lettering %s/%s@%s: %s", record.topic, record.partition, record.offset, exc
        )
        await dead_letter(publisher, record, str(exc))
    return None


class TopicTable:
    """Follows every partition of a (compacted) topic from the beginning (or from a time, see
    ``newer_than_s``), without a consumer group.

    Each decoded event is passed to ``apply``. :meth:`catch_up` waits until everything that was
    on the topic when it was called has been applied: read-your-writes across instances.
    """

    #: Records read and decoded so far (what the start-up replay cost).
    records: int

    def __init__(
        self,
        bootstrap: str,
        service: str,
        topic: str,
        apply: Callable[[Event], None],
        *,
        catch_up_timeout_s: float = 5.0,
        fetch_max_wait_ms: int | None = None,
        newer_than_s: float | None = None,
    ) -> None:
        """``fetch_max_wait_ms`` overrides how long an idle fetch waits at the broker.

        A fetch is answered as soon as records arrive, so a longer wait does not delay
        :meth:`catch_up`; it only makes an idle table cheaper for the broker, which answers
        an idle fetch every 20 ms by default.

        ``newer_than_s``: start each partition at its first record whose Kafka timestamp is at
        most that many seconds old when the table connects (at its end if none is), not at
        its beginning; for a table that keeps only recent events, whose older records it
        would read only to drop.
        """
        self.topic = topic
        self.records = 0
        self._newer_than_s = newer_than_s
        self._settings = consumer_settings(bootstrap, service, group=None)
        if fetch_max_wait_ms is not None:
            self._settings["fetch_max_wait_ms"] = fetch_max_wait_ms
        self._apply = apply
        self._timeout_s = catch_up_timeout_s
        self._consumer: AIOKafkaConsumer | None = None
        #: Asks for the log ends on a connection of its own: on the follower's, the request
        #: would wait behind the idle fetch the broker holds (fetch_max_wait_ms).
        self._ends: AIOKafkaConsumer | None = None
        self._partitions: list[TopicPartition] = []
        self._positions: dict[TopicPartition, int] = {}
        self._progress = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()

    async def start(self) -> None:
        """Begin following the topic in the background (retrying while Kafka is down)."""
        self._task = asyncio.create_task(self._follow())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for consumer in (self._consumer, self._ends):
            if consumer is not None:
                await consumer.stop()

    async def _connect(self) -> AIOKafkaConsumer:
        delay = 0.2
        while True:
            consumer = AIOKafkaConsumer(**self._settings)
            try:
                await consumer.start()
                self._partitions = await partitions_of(consumer, self.topic)
                if not self._partitions:
                    raise KafkaError(f"topic {self.topic} does not exist yet")
                consumer.assign(self._partitions)
                if self._newer_than_s is None:
                    await consumer.seek_to_beginning(*self._partitions)
                else:
                    await self._seek_to_time(consumer, self._newer_than_s)
                if self._ends is None:
                    self._ends = AIOKafkaConsumer(**self._settings)
                    await self._ends.start()
                return consumer
            except KafkaError as exc:
                log.warning("%s: waiting for kafka (%s)", self.topic, exc)
                with contextlib.suppress(Exception):
                    await consumer.stop()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _seek_to_time(self, consumer: AIOKafkaConsumer, newer_than_s: float) -> None:
        # The ends are asked first: a record appended after that is read whatever its time, so
        # a partition found without a recent record skips nothing written meanwhile.
        ends = await consumer.end_offsets(self._partitions)
        since_ms = int((time.time() - newer_than_s) * 1000)
        found = await consumer.offsets_for_times({tp: since_ms for tp in self._partitions})
        for tp in self._partitions:
            first = found.get(tp)
            consumer.seek(tp, ends[tp] if first is None else first.offset)

    async def _follow(self) -> None:
        self._consumer = await self._connect()
        self._connected.set()
        while True:
            batches = await self._consumer.getmany(timeout_ms=200, max_records=5000)
            for records in batches.values():
                self.records += len(records)
                for record in records:
                    try:
                        event = decode(record.value, record.headers)
                    except (InvalidEvent, UnknownEventType) as exc:
                        log.warning("%s@%s: skipped: %s", self.topic, record.offset, exc)
                        continue
                    self._apply(event)
            # The position can pass the last record (compaction gaps, control records), so ask
            # the consumer rather than counting records.
            for tp in self._partitions:
                self._positions[tp] = await self._consumer.position(tp)
            async with self._progress:
                self._progress.notify_all()

    async def catch_up(self) -> None:
        """Return once every record on the topic at call time is applied.

        Raises :class:`KafkaUnavailable` when that takes longer than the catch-up timeout.
        """
        try:
            async with asyncio.timeout(self._timeout_s):
                # Just after start-up the consumer may still be connecting: wait for it within
                # the same bound rather than refusing (a gateway restarted a moment ago must
                # still recognise a redelivery).
                await self._connected.wait()
                assert self._ends is not None
                # One ListOffsets per call: a request already in flight may predate a write the
                # caller was told about, so sharing it would break read-your-writes.
                ends = await self._ends.end_offsets(self._partitions)
                async with self._progress:
                    await self._progress.wait_for(
                        lambda: all(self._positions.get(tp, -1) >= end for tp, end in ends.items())
                    )
        except (TimeoutError, KafkaError) as exc:
            raise KafkaUnavailable(f"{self.topic}: could not catch up: {exc!r}") from exc
