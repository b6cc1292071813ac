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
                await self._notifier.attempt(delivery)
            except Exception:
                log.exception("attempt of %s failed unexpectedly", delivery.message_id)
            finally:
                delivery.in_flight = False
            self._notifier.schedule(delivery)


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
        self._consumer_settings = consumer_settings(bootstrap, "notifier", group=group)
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
        self._tasks: set[asyncio.Task[None]] = set()
        self.subscriptions_table = TopicTable(
            bootstrap, "notifier", topics.named(topics.SUBSCRIPTIONS, namespace), self._disabled
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
            for delivery in book.deliveries.values():
                delivery.revoked = True
                if delivery.timer is not None:
                    delivery.timer.cancel()
            await self._commit(tp, book)
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

    async def attempt(self, delivery: Delivery) -> None:
        events = await handlers.attempt_delivery(delivery, self.deps)
        await self._publish_forever(events)
        # Apply our own events now (their echo from Kafka is then a no-op): the Book only
        # moves on after the events are durable, so a commit never outruns the record.
        book = self.books.get(TopicPartition(self.topic, delivery.partition))
        if book is None:
            return
        for event in events:
            if isinstance(event, SubscriptionDisabled):
                self.deps.disabled[event.subscription_id] = event.config_version
            for handler in HANDLERS.get(type(event), ()):
                await handler(event, -1, book, self.deps)
        book.touched.clear()

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

    async def _commit(self, tp: TopicPartition, book: Book) -> None:
        consumer = self.consumer
        if consumer is None or tp not in self.live:
            return
        low = book.low_watermark(self.next_offset[tp])
        if self.committed.get(tp) == low:
            return
        try:
            await consumer.commit({tp: low})
            self.committed[tp] = low
        except KafkaError as exc:
            log.warning("%s: commit of %s failed: %s", tp, low, exc)

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
                        event = await decode_or_dead_letter(self.publisher, record)
                        if event is not None:
                            await self._handle(tp, event, record.offset)
                        self.next_offset[tp] = record.offset + 1
                for tp in list(self.books):
                    self._maybe_go_live(tp)
                if time.monotonic() - last_commit > COMMIT_EVERY_S:
                    last_commit = time.monotonic()
                    for tp, book in list(self.books.items()):
                        await self._commit(tp, book)
        finally:
            for tp, book in list(self.books.items()):
                await self._commit(tp, book)
            await consumer.stop()
            await self.subscriptions_table.stop()
            for lane in self.lanes.values():
                for worker in lane.workers:
                    worker.cancel()
            await self.deps.sender.close()
            await self.publisher.stop()


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
