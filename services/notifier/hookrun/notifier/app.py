"""Composition root of the notifier: build(settings) wires it; main() runs it until SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
import time
from collections.abc import Coroutine, Sequence
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError

from hookrun.config import ConfigError, HookrunConfig, load_config
from hookrun.events import topics
from hookrun.events.base import Event
from hookrun.events.codec import InvalidEvent, UnknownEventType, decode
from hookrun.events.kafka import (
    KafkaUnavailable,
    Publisher,
    TopicTable,
    consumer_settings,
    decode_or_dead_letter,
    ensure_topics_forever,
)
from hookrun.events.notifications import RedeliveryRequested, SubscriptionDisabled
from hookrun.events.runs import RunFinished
from hookrun.notifier import handlers
from hookrun.notifier.adapters import HttpSender, Sender
from hookrun.notifier.config import Settings
from hookrun.notifier.handlers import HANDLERS, Book, Delivery, Deps

log = logging.getLogger("hookrun.notifier")

#: How often the low watermark of each partition is committed.
COMMIT_EVERY_S = 0.5
#: How long a delivery waits after an unexpected error before it is tried again.
ERROR_RETRY_S = 5.0
#: How long the subscriptions table's fetch waits at the broker when there is nothing new.
IDLE_TABLE_FETCH_WAIT_MS = 500


class Lane:
    """One subscription's queue and workers: a hanging subscriber only stalls its own lane."""

    def __init__(self, notifier: Notifier, concurrency: int) -> None:
        self.queue: asyncio.Queue[Delivery] = asyncio.Queue()
        self._notifier = notifier
        self.workers = [asyncio.create_task(self._work()) for _ in range(concurrency)]

    async def _work(self) -> None:
        while True:
            delivery = await self.queue.get()
            if delivery.done or delivery.revoked or delivery.in_flight:
                continue
            delivery.in_flight = True
            try:
                events = await handlers.attempt_delivery(delivery, self._notifier.deps)
            except Exception:
                log.exception("attempt of %s failed unexpectedly", delivery.message_id)
                delivery.in_flight = False
                self._notifier.retry_later(delivery)
                continue
            # The delivery stays in flight until its events are durable (Recorder).
            await self._notifier.recorder.record(delivery, events)


class Recorder:
    """Appends the events of finished attempts in batches: one acks=all publish per batch.

    A worker hands over an attempt's events and goes on to its next attempt, so a lane's
    connections do not wait for Kafka's acknowledgement. The delivery stays in flight (never
    attempted again) until its events are acknowledged; only then does the Book apply them
    and schedule what follows, so a commit never outruns the record. At most ``limit``
    attempts wait unrecorded: past that, workers wait too, so a Kafka outage stalls sending
    rather than piling up attempts that a crash would make again.
    """

    def __init__(self, notifier: Notifier, limit: int) -> None:
        self._notifier = notifier
        self._room = asyncio.Semaphore(limit)
        self._pending: list[tuple[Delivery, list[Event]]] = []
        self._wakeup = asyncio.Event()
        #: Attempts handed over (or waiting for room) and not yet recorded and applied.
        self._unrecorded = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None

    async def record(self, delivery: Delivery, events: list[Event]) -> None:
        """Queue an attempt's events for the next batch; wait only while ``limit`` are queued."""
        self._unrecorded += 1
        self._idle.clear()
        try:
            await self._room.acquire()
        except BaseException:  # cancelled while waiting: never handed over
            self._done(1)
            raise
        self._pending.append((delivery, events))
        self._wakeup.set()
        if self._task is None:
            self._task = asyncio.create_task(self._flush_forever())

    async def drain(self) -> None:
        """Return once everything handed over so far is recorded and applied."""
        await self._idle.wait()

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def _flush_forever(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            # Everything handed over while the previous batch was being acknowledged.
            batch, self._pending = self._pending, []
            try:
                await self._notifier.record(batch)
            except Exception:
                log.exception("recording %d attempts failed unexpectedly", len(batch))
                for delivery, _ in batch:  # not recorded: the attempts are made again
                    delivery.in_flight = False
                    self._notifier.retry_later(delivery)
            finally:
                for _ in batch:
                    self._room.release()
                self._done(len(batch))

    def _done(self, n: int) -> None:
        self._unrecorded -= n
        if not self._unrecorded:
            self._idle.set()


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, notifier: Notifier) -> None:
        self._notifier = notifier

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self._notifier.revoke(list(revoked))

    async def on_partitions_assigned(self, assigned: Any) -> None:
        self._notifier.assign(list(assigned))


class Notifier:
    """Consumes hookrun.runs (group ``notifier``), keeps a Book per partition, delivers."""

    def __init__(
        self,
        deps: Deps,
        *,
        bootstrap: str,
        namespace: str,
        publisher: Publisher,
        concurrency: int,
    ) -> None:
        self.deps = deps
        self.namespace = namespace
        self.topic = topics.named(topics.RUNS, namespace)
        group = "notifier" if namespace == topics.NAMESPACE else f"{namespace}.notifier"
        self._consumer_settings = {
            **consumer_settings(bootstrap, "notifier", group=group),
            # The broker holds a fetch until 64 KiB are there or fetch_max_wait_ms (20 ms)
            # passed. Without it, at 50 runs/s every record or two came in a fetch of its own
            # (2.6 per run); the wait holds a lone run's notification up to 20 ms.
            "fetch_min_bytes": 64 * 1024,
        }
        self._bootstrap = bootstrap
        self.publisher = publisher
        self._concurrency = concurrency
        self.consumer: AIOKafkaConsumer | None = None
        self.books: dict[TopicPartition, Book] = {}
        self.next_offset: dict[TopicPartition, int] = {}
        #: Log-end offsets at assignment: until a partition reaches it, events are only replayed.
        self.replay_end: dict[TopicPartition, int] = {}
        self.live: set[TopicPartition] = set()
        self.committed: dict[TopicPartition, int] = {}
        self.lanes: dict[str, Lane] = {}
        self.recorder = Recorder(self, limit=2 * concurrency)
        #: ce_id of each event recorded by this process -> the Book it was applied to.
        self._own: dict[bytes, Book] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        # A fetch is answered as soon as records arrive: the longer idle wait only makes the
        # idle table cheaper (2 fetches/s instead of 50; 20 ms cost the broker ~0.1 core).
        self.subscriptions_table = TopicTable(
            bootstrap,
            "notifier",
            topics.named(topics.SUBSCRIPTIONS, namespace),
            self._disabled,
            fetch_max_wait_ms=IDLE_TABLE_FETCH_WAIT_MS,
        )

    def _disabled(self, event: Event) -> None:
        if isinstance(event, SubscriptionDisabled):
            self.deps.disabled[event.subscription_id] = event.config_version

    @property
    def ready(self) -> bool:
        """True once partitions are assigned and every one has replayed to its log end."""
        return bool(self.books) and set(self.books) <= self.live

    # -- partitions ------------------------------------------------------------------------

    def assign(self, assigned: Sequence[TopicPartition]) -> None:
        for tp in assigned:
            self.books.setdefault(tp, Book())

    async def revoke(self, revoked: Sequence[TopicPartition]) -> None:
        for tp in revoked:
            book = self.books.pop(tp, None)
            if book is None:
                continue
            self._own = {k: b for k, b in self._own.items() if b is not book}
            for delivery in book.deliveries.values():
                delivery.revoked = True
                if delivery.timer is not None:
                    delivery.timer.cancel()
            await self._commit({tp: book})
            self.live.discard(tp)
            self.replay_end.pop(tp, None)
            self.next_offset.pop(tp, None)
            self.committed.pop(tp, None)

    async def _catch_up_state(self, consumer: AIOKafkaConsumer) -> None:
        fresh = [tp for tp in self.books if tp not in self.replay_end]
        if not fresh:
            return
        ends = await consumer.end_offsets(fresh)
        for tp in fresh:
            self.replay_end[tp] = ends[tp]
            position = await consumer.position(tp)
            self.next_offset.setdefault(tp, position)
            self.committed.setdefault(tp, position)
            log.info("%s: replaying %s..%s", tp, position, ends[tp])

    def _maybe_go_live(self, tp: TopicPartition) -> None:
        if tp in self.live or tp not in self.replay_end:
            return
        if self.next_offset.get(tp, 0) >= self.replay_end[tp]:
            self.live.add(tp)
            book = self.books[tp]
            book.touched.clear()
            pending = book.pending()
            log.info("%s: live, %d deliveries pending", tp, len(pending))
            for delivery in pending:
                self.schedule(delivery)
            for request, offset in book.unknown:
                self._spawn(self._find_run_and_redeliver(tp, request, offset))
            book.unknown.clear()

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- scheduling ------------------------------------------------------------------------

    def lane(self, subscription_id: str) -> Lane:
        lane = self.lanes.get(subscription_id)
        if lane is None:
            lane = self.lanes[subscription_id] = Lane(self, self._concurrency)
        return lane

    def schedule(self, delivery: Delivery) -> None:
        """Queue the delivery's next attempt now or at ``next_at`` (a timer, not a worker)."""
        if delivery.done or delivery.revoked or delivery.in_flight:
            return
        if delivery.timer is not None:
            delivery.timer.cancel()
            delivery.timer = None
        lane = self.lane(delivery.subscription.id)
        delay = delivery.next_at - self.deps.now()
        if delay <= 0:
            lane.queue.put_nowait(delivery)
        else:
            delivery.timer = asyncio.get_running_loop().call_later(
                delay, lane.queue.put_nowait, delivery
            )

    def retry_later(self, delivery: Delivery) -> None:
        """Schedule a delivery again after an unexpected error, never at once: an error that
        recurs must not spin a worker on the same delivery."""
        delivery.next_at = max(delivery.next_at, self.deps.now() + ERROR_RETRY_S)
        self.schedule(delivery)

    async def record(self, batch: Sequence[tuple[Delivery, list[Event]]]) -> None:
        """Append the events of finished attempts (one acks=all publish), then apply them."""
        events: list[Event] = []
        for delivery, caused in batch:
            book = self.books.get(TopicPartition(self.topic, delivery.partition))
            for event in caused:
                events.append(event)
                if book is not None and type(event).topic == topics.RUNS:
                    # Its echo from this partition then needs no decoding: it is applied below.
                    self._own[event.event_id.encode()] = book
        await self._publish_forever(events)
        # Apply our own events now: the Book only moves on after the events are durable, so
        # a commit never outruns the record.
        for delivery, caused in batch:
            try:
                await self._apply_own(delivery, caused)
            except Exception:
                log.exception("recording %s failed unexpectedly", delivery.message_id)
                delivery.in_flight = False
                self.retry_later(delivery)
            else:
                delivery.in_flight = False
                self.schedule(delivery)

    async def _apply_own(self, delivery: Delivery, events: Sequence[Event]) -> None:
        book = self.books.get(TopicPartition(self.topic, delivery.partition))
        for event in events:
            if isinstance(event, SubscriptionDisabled):
                self.deps.disabled[event.subscription_id] = event.config_version
            if book is not None:
                for handler in HANDLERS.get(type(event), ()):
                    await handler(event, -1, book, self.deps)
        if book is not None:
            book.touched.clear()

    def _is_own_echo(self, tp: TopicPartition, headers: Sequence[tuple[str, bytes]]) -> bool:
        """True for a record this process appended and already applied to ``tp``'s Book."""
        for name, value in headers:
            if name == "ce_id":
                book = self._own.pop(value, None)
                return book is not None and book is self.books.get(tp)
        return False

    async def _publish_forever(self, events: Sequence[Event]) -> None:
        delay = 0.2
        while True:
            try:
                await self.publisher.publish(events)
                return
            except KafkaUnavailable as exc:
                log.warning("could not record attempt (%s); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    # -- consuming -------------------------------------------------------------------------

    async def _handle(self, tp: TopicPartition, event: Event, offset: int) -> None:
        book = self.books.get(tp)
        if book is None:
            return
        for handler in HANDLERS.get(type(event), ()):
            await handler(event, offset, book, self.deps)
        for delivery in book.touched:
            delivery.partition = tp.partition
        if tp in self.live:
            for delivery in book.touched:
                self.schedule(delivery)
            for request, at in book.unknown:
                self._spawn(self._find_run_and_redeliver(tp, request, at))
            book.unknown.clear()
        book.touched.clear()

    async def _find_run_and_redeliver(
        self, tp: TopicPartition, request: RedeliveryRequested, before: int
    ) -> None:
        """A redelivery of a run older than the Book: find its RunFinished in the partition."""
        consumer = AIOKafkaConsumer(**consumer_settings(self._bootstrap, "notifier", group=None))
        await consumer.start()
        found: tuple[RunFinished, int] | None = None
        try:
            consumer.assign([tp])
            await consumer.seek_to_beginning(tp)
            while found is None and await consumer.position(tp) < before:
                batches = await consumer.getmany(tp, timeout_ms=500, max_records=5000)
                for record in batches.get(tp, []):
                    if record.offset >= before or record.key != request.run_id.encode():
                        continue
                    with contextlib.suppress(InvalidEvent, UnknownEventType):
                        event = decode(record.value, record.headers)
                        if isinstance(event, RunFinished):
                            found = (event, record.offset)
        finally:
            await consumer.stop()
        book = self.books.get(tp)
        if found is None or book is None:
            log.warning("redelivery of unknown run %s ignored", request.run_id)
            return
        book.remember(*found)
        await self._handle(tp, request, before)

    async def _commit(self, books: dict[TopicPartition, Book]) -> None:
        """Commit the low watermark of each live partition in ``books`` that moved, in one
        request."""
        consumer = self.consumer
        if consumer is None:
            return
        moved = {}
        for tp, book in books.items():
            if tp in self.live:
                low = book.low_watermark(self.next_offset[tp])
                if self.committed.get(tp) != low:
                    moved[tp] = low
        if not moved:
            return
        try:
            await consumer.commit(moved)
            self.committed.update(moved)
        except KafkaError as exc:
            log.warning("commit of %s failed: %s", moved, exc)

    async def run(self, stopping: asyncio.Event) -> None:
        """Consume until ``stopping`` is set."""
        await self.publisher.start(wait=True)
        await self.subscriptions_table.start()
        consumer = self.consumer = AIOKafkaConsumer(**self._consumer_settings)
        await consumer.start()
        try:
            consumer.subscribe([self.topic], listener=_Rebalance(self))
            last_commit = 0.0
            while not stopping.is_set():
                batches = await consumer.getmany(timeout_ms=200, max_records=2000)
                await self._catch_up_state(consumer)
                for tp, records in batches.items():
                    for record in records:
                        if _acts_on(record.headers) and not (
                            self._own and self._is_own_echo(tp, record.headers)
                        ):
                            event = await decode_or_dead_letter(self.publisher, record)
                            if event is not None:
                                await self._handle(tp, event, record.offset)
                        self.next_offset[tp] = record.offset + 1
                for tp in list(self.books):
                    self._maybe_go_live(tp)
                if time.monotonic() - last_commit > COMMIT_EVERY_S:
                    last_commit = time.monotonic()
                    await self._commit(dict(self.books))
        finally:
            for lane in self.lanes.values():
                for worker in lane.workers:
                    worker.cancel()
            # Attempts already made are recorded before the last commit (if Kafka lets us).
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5.0):
                    await self.recorder.drain()
            self.recorder.stop()
            await self._commit(dict(self.books))
            await consumer.stop()
            await self.subscriptions_table.stop()
            await self.deps.sender.close()
            await self.publisher.stop()


#: The CloudEvent types the notifier acts on. The others on the runs topic (most of its records)
#: are skipped by their ce_type header, undecoded: the runner and the status service, which act
#: on them, validate them and dead-letter a malformed one.
ACTED_ON = frozenset(cls.type.encode() for cls in HANDLERS)


def _acts_on(headers: Sequence[tuple[str, bytes]]) -> bool:
    """False for a record whose ce_type the notifier has no handler for."""
    for name, value in headers:
        if name == "ce_type":
            return value in ACTED_ON
    return True  # no type: decoded, and dead-lettered as not a CloudEvent


def build(settings: Settings, config: HookrunConfig, *, sender: Sender | None = None) -> Notifier:
    """Return the wired notifier; the real HTTP sender unless a fake is passed in."""
    policy = config.notifier
    if sender is None:
        sender = HttpSender(
            timeout_s=policy.timeout_s,
            allow_private=policy.allow_private_targets,
            concurrency=settings.hookrun_notifier_concurrency,
        )
    deps = Deps(
        config=config,
        schedule=settings.hookrun_notifier_retry_schedule_s or policy.retry_schedule_s,
        jitter=policy.jitter,
        sender=sender,
    )
    publisher = Publisher(
        settings.kafka_bootstrap_servers, "notifier", namespace=settings.hookrun_namespace
    )
    return Notifier(
        deps,
        bootstrap=settings.kafka_bootstrap_servers,
        namespace=settings.hookrun_namespace,
        publisher=publisher,
        concurrency=settings.hookrun_notifier_concurrency,
    )


async def serve_health(notifier: Notifier, port: int) -> asyncio.Server:
    """A minimal GET /healthz on 127.0.0.1 (no web framework needed for one JSON line)."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            await reader.readuntil(b"\r\n\r\n")
            body = orjson.dumps(
                {
                    "kafka": notifier.ready,
                    "partitions": len(notifier.books),
                    "lanes": len(notifier.lanes),
                }
            )
            writer.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n"
                + f"content-length: {len(body)}\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        writer.close()

    return await asyncio.start_server(answer, "127.0.0.1", port)


async def _main(settings: Settings, config: HookrunConfig) -> None:
    await ensure_topics_forever(
        settings.kafka_bootstrap_servers, namespace=settings.hookrun_namespace
    )
    notifier = build(settings, config)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    health = None
    if settings.hookrun_notifier_health_port:
        health = await serve_health(notifier, settings.hookrun_notifier_health_port)
    try:
        await notifier.run(stopping)
    finally:
        if health is not None:
            health.close()


def main() -> None:
    """Run the notifier with the settings from the environment."""
    settings = Settings()
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s notifier %(name)s: %(message)s",
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        config = load_config(settings.hookrun_config)
    except ConfigError as exc:
        print(f"hookrun notifier: invalid config\n{exc}", file=sys.stderr)
        raise SystemExit(2) from exc
    import uvloop

    uvloop.run(_main(settings, config))


if __name__ == "__main__":
    main()
