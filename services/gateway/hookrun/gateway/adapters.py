"""The gateway's I/O: appending events and the redelivery index, each with a Fake twin for tests."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any, Protocol

from aiokafka.errors import KafkaError

from hookrun.events import Event, InboundDeliveryRecorded, decode, topics
from hookrun.events.codec import Record
from hookrun.events.kafka import KafkaUnavailable, Publisher, TopicTable
from hookrun.events.maps import EventMap
from hookrun.events.transactions import TransactionalPublisher

log = logging.getLogger(__name__)

#: How long the redelivery index's fetch waits at the broker when there is nothing new.
IDLE_FETCH_WAIT_MS = 500


class EventLog(Protocol):
    """Where the gateway, and the status service's admin API, append events."""

    #: ``ce_source`` of the records callers encode themselves (the publisher's).
    source: str

    async def append(self, events: Sequence[Event]) -> None:
        """Append and wait for acks=all; raise KafkaUnavailable if not acknowledged in time."""

    async def append_records(self, records: Sequence[Record]) -> None:
        """As :meth:`append`, for events already encoded (``ce_source`` stamped by the caller)."""

    async def append_together(self, records: Sequence[Record]) -> None:
        """As :meth:`append_records`, all of them or none (a Kafka transaction).

        On KafkaUnavailable the records may still be committed later, but only all together.
        """

    def append_soon(self, events: Sequence[Event]) -> None:
        """Append without making the caller wait (trigger-log entries); failures are logged."""


class KafkaEventLog:
    """EventLog on a Kafka Publisher, and a TransactionalPublisher for all-or-nothing appends.

    Without ``together``, :meth:`append_together` appends the records one by one (tests).
    """

    def __init__(
        self,
        publisher: Publisher,
        *,
        ack_timeout_s: float,
        together: TransactionalPublisher | None = None,
    ) -> None:
        self._publisher = publisher
        self._ack_timeout_s = ack_timeout_s
        self._together = together
        self.source = publisher.source
        self._pending: set[asyncio.Task[None]] = set()

    async def append(self, events: Sequence[Event]) -> None:
        publisher = self._publisher
        await self.append_records([publisher.record(event) for event in events])

    async def append_records(self, records: Sequence[Record]) -> None:
        # Publisher.publish, with one timer instead of an ``asyncio.timeout`` block around the
        # wait: the timer costs less per launch (decision 0009).
        publisher = self._publisher
        futures = [await publisher.send_record(record) for record in records]
        timer = asyncio.get_running_loop().call_later(self._ack_timeout_s, _expire, futures)
        try:
            for future in futures:
                await future
        except (KafkaError, TimeoutError) as exc:
            for future in futures:  # the others' errors count as seen, not "never retrieved"
                if future.done() and not future.cancelled():
                    future.exception()
            raise KafkaUnavailable(f"kafka did not acknowledge: {exc!r}") from exc
        finally:
            timer.cancel()

    async def append_together(self, records: Sequence[Record]) -> None:
        if self._together is None:
            await self.append_records(records)
        else:
            await self._together.append(records, timeout_s=self._ack_timeout_s)

    def append_soon(self, events: Sequence[Event]) -> None:
        task = asyncio.create_task(self._append_logged(events))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _append_logged(self, events: Sequence[Event]) -> None:
        try:
            await self._publisher.publish(events)
        except KafkaUnavailable as exc:
            log.error("trigger log entry lost: %s (%s)", [e.type for e in events], exc)

    async def drain(self) -> None:
        """Wait for the fire-and-forget appends still in flight (at shutdown)."""
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)


def _expire(futures: Sequence[asyncio.Future[Any]]) -> None:
    # aiokafka skips futures that are already done when the batch completes later.
    for future in futures:
        if not future.done():
            future.set_exception(TimeoutError("no acknowledgement in time"))


class FakeEventLog:
    """EventLog that records what was appended; ``down`` makes appends fail like a dead broker.

    The status service's tests use it too: its admin API appends through the same port.
    """

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.down = False
        self.source = "hookrun"

    async def append(self, events: Sequence[Event]) -> None:
        if self.down:
            raise KafkaUnavailable("fake broker is down")
        self.events.extend(events)

    async def append_records(self, records: Sequence[Record]) -> None:
        """Decodes the records with the real codec: what a consumer would read is recorded."""
        if self.down:
            raise KafkaUnavailable("fake broker is down")
        self.events.extend(decode(r.value, r.headers) for r in records)

    async def append_together(self, records: Sequence[Record]) -> None:
        await self.append_records(records)

    def append_soon(self, events: Sequence[Event]) -> None:
        if not self.down:
            self.events.extend(events)


class DeliveryIndex(Protocol):
    """Remembers which run each provider delivery id started, for redelivery dedupe."""

    async def find(self, trigger_id: str, delivery_id: str) -> str | None:
        """Return the run id a delivery already started (within the window), else None."""

    def remember(self, trigger_id: str, delivery_id: str, run_id: str) -> None:
        """Note locally that a delivery started a run (its record is appended by the caller)."""


class FakeDeliveryIndex:
    """In-memory DeliveryIndex."""

    def __init__(self) -> None:
        self.seen: dict[str, str] = {}

    async def find(self, trigger_id: str, delivery_id: str) -> str | None:
        return self.seen.get(f"{trigger_id}/{delivery_id}")

    def remember(self, trigger_id: str, delivery_id: str, run_id: str) -> None:
        self.seen[f"{trigger_id}/{delivery_id}"] = run_id


#: The gateway reads one topic: the inbound delivery ids of its dedupe index.
EVENTS = EventMap(
    "gateway",
    frozenset({topics.INBOUND_DELIVERIES}),
    {InboundDeliveryRecorded: "KafkaDeliveryIndex"},
)


class KafkaDeliveryIndex:
    """DeliveryIndex on the compacted ``hookrun.inbound-deliveries`` topic.

    Every gateway instance reads the topic's last window (no consumer group) into memory, so a
    restarted gateway and every other instance know the delivery ids accepted before. ``find``
    first catches up to the topic's log end, so a delivery that any instance acknowledged is
    found.
    """

    def __init__(
        self,
        bootstrap: str,
        *,
        window_s: float,
        catch_up_timeout_s: float = 5.0,
        namespace: str = topics.NAMESPACE,
    ) -> None:
        self._window_s = window_s
        self._runs: dict[str, tuple[str, float]] = {}
        self._table = TopicTable(
            bootstrap,
            "gateway",
            topics.named(topics.INBOUND_DELIVERIES, namespace),
            self._apply,
            catch_up_timeout_s=catch_up_timeout_s,
            # An idle long poll: records still arrive at once, and the broker is not asked
            # 50 times a second (decision 0008).
            fetch_max_wait_ms=IDLE_FETCH_WAIT_MS,
            # A record's Kafka timestamp is taken when it is sent (or appended), never before
            # its event's occurred_at: the records older than the window hold no delivery the
            # index would keep, so they are not read (decision 0057).
            newer_than_s=window_s,
        )

    async def start(self) -> None:
        await self._table.start()

    async def stop(self) -> None:
        await self._table.stop()

    def _apply(self, event: Event) -> None:
        if isinstance(event, InboundDeliveryRecorded):
            at = event.occurred_at.timestamp()
            if time.time() - at < self._window_s:
                self._add(event.dedupe_key, event.run_id, at)

    def remember(self, trigger_id: str, delivery_id: str, run_id: str) -> None:
        self._add(f"{trigger_id}/{delivery_id}", run_id, time.time())

    def _add(self, key: str, run_id: str, at: float) -> None:
        """Index a delivery; every 10,000 entries, forget those past the window, so the index
        holds the window's deliveries plus at most 10,000 however long the gateway runs."""
        self._runs[key] = (run_id, at)
        if len(self._runs) % 10_000 == 0:
            self._forget_expired()

    @property
    def records_read(self) -> int:
        """Records of the topic read so far (at start: the window's, not the topic's)."""
        return self._table.records

    def entries(self) -> Mapping[str, tuple[str, float]]:
        """The index as it stands, read-only: ``<trigger id>/<delivery id>`` -> (run id,
        accepted at); what the gateway holds in memory for redelivery dedupe."""
        return MappingProxyType(self._runs)

    async def find(self, trigger_id: str, delivery_id: str) -> str | None:
        key = f"{trigger_id}/{delivery_id}"
        hit = self._fresh(key)
        if hit is not None:
            return hit
        await self._table.catch_up()
        return self._fresh(key)

    def _fresh(self, key: str) -> str | None:
        entry = self._runs.get(key)
        if entry is None or time.time() - entry[1] >= self._window_s:
            return None
        return entry[0]

    def _forget_expired(self) -> None:
        cutoff = time.time() - self._window_s
        for key in [k for k, (_, at) in self._runs.items() if at < cutoff]:
            del self._runs[key]
