"""Composition root of the notifier: build(settings) wires it; main() runs it until SIGTERM.

The :class:`Notifier` is the service the shared consume loop runs: a :class:`Book` per
partition of hookrun.runs, rebuilt by the loop's replay, and the lanes that send what it holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Callable, Coroutine, Sequence
from functools import partial
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from hookrun.config import ConfigError, HookrunConfig, load_config
from hookrun.config.sealing import sealer_of
from hookrun.events import logs, topics, tracing
from hookrun.events.base import Event
from hookrun.events.clients import Commit, ConsumerClient, GroupConsumer
from hookrun.events.codec import InvalidEvent, UnknownEventType, decode
from hookrun.events.consumer import ConsumeLoop
from hookrun.events.health import serve_health
from hookrun.events.kafka import (
    KafkaUnavailable,
    Publisher,
    TopicTable,
    consumer_settings,
    ensure_topics_forever,
)
from hookrun.events.notifications import (
    RedeliveryRequested,
    SubscriptionDeleted,
    SubscriptionDisabled,
    SubscriptionSaved,
)
from hookrun.events.runs import RunFinished
from hookrun.events.service import Handler, Partition, PublisherClient, Service
from hookrun.notifier import metrics
from hookrun.notifier.adapters import HttpSender, Sender
from hookrun.notifier.config import Settings
from hookrun.notifier.handlers import EVENTS, HANDLERS, Book, Delivery, Deps, why_canceled
from hookrun.notifier.lanes import Lane, Recorder

log = logging.getLogger("hookrun.notifier")

#: How often the low watermark of each partition is committed.
COMMIT_EVERY_S = 0.5
#: How long a delivery waits after an unexpected error before it is tried again.
ERROR_RETRY_S = 5.0
#: How long the subscriptions table's fetch waits at the broker when there is nothing new: a
#: fetch is answered as soon as records arrive, so a long wait only makes the idle table cheap.
IDLE_TABLE_FETCH_WAIT_MS = 500
#: The broker holds a fetch of the runs topic until this much is there or its wait (20 ms)
#: passed: at a moderate rate a batch then holds many runs instead of a record or two; a lone
#: run's notification waits up to those 20 ms.
FETCH_MIN_BYTES = 64 * 1024
#: Records per fetch at most.
MAX_RECORDS = 2000


def group_of(namespace: str) -> str:
    """The notifier's consumer group in ``namespace``."""
    return "notifier" if namespace == topics.NAMESPACE else f"{namespace}.notifier"


class Notifier(Service[Book]):
    """Consumes hookrun.runs (group ``notifier``), keeps a Book per partition, delivers."""

    def __init__(
        self,
        deps: Deps,
        *,
        consumer: ConsumerClient,
        publisher: PublisherClient,
        bootstrap: str,
        namespace: str,
        concurrency: int,
        reader: Callable[[], Any] | None = None,
    ) -> None:
        """``bootstrap`` serves the side readers: the table of disabled subscriptions, and unless
        ``reader`` makes them, the groupless consumers that scan a partition for an old run."""
        self.deps = deps
        deps.load_run = self.load_run
        self.namespace = namespace
        self.topic = topics.named(topics.RUNS, namespace)
        self._reader = reader or partial(
            AIOKafkaConsumer, **consumer_settings(bootstrap, "notifier", group=None)
        )
        self.publisher = publisher
        self._concurrency = concurrency
        #: The handlers with the notifier's dependencies bound: (event, offset, book).
        self._table: dict[type[Event], list[Handler[Book]]] = {
            # A Callable alias cannot name the parameter partial binds.
            cls: [partial(handler, deps=deps) for handler in handlers]  # type: ignore[call-arg]
            for cls, handlers in HANDLERS.items()
        }
        self.loop = ConsumeLoop(
            self,
            consumer=consumer,
            publisher=publisher,
            topics=[topics.RUNS],
            events=EVENTS,
            handlers=self._table,
            max_records=MAX_RECORDS,
            commit_every_s=COMMIT_EVERY_S,
        )
        self.lanes: dict[str, Lane] = {}
        self.recorder = Recorder(self, limit=2 * concurrency)
        self._tasks: set[asyncio.Task[None]] = set()
        self.subscriptions_table = TopicTable(
            bootstrap,
            "notifier",
            topics.named(topics.SUBSCRIPTIONS, namespace),
            self.disabled,
            fetch_max_wait_ms=IDLE_TABLE_FETCH_WAIT_MS,
        )

    def disabled(self, event: Event) -> None:
        """Follow hookrun.subscriptions: note each subscription disabled (and under which config),
        made, changed or deleted; retries waiting for one that changed are looked at again."""
        self.deps.states.apply(event)
        if isinstance(event, SubscriptionSaved | SubscriptionDeleted | SubscriptionDisabled):
            self._reschedule(event.subscription_id)

    def _reschedule(self, subscription_id: str) -> None:
        """Schedule the waiting retries to ``subscription_id`` again: one it will no longer get
        (:func:`why_canceled`) is canceled now rather than when it is due, hours later."""
        now = self.deps.now()
        for part in self.loop.parts.values():
            if not part.live:
                continue  # went_live schedules them
            for delivery in part.state.deliveries.values():
                waiting = delivery.timer is not None and delivery.next_at > now  # not queued
                if waiting and delivery.subscription.id == subscription_id:
                    self.schedule(delivery)

    @property
    def books(self) -> dict[TopicPartition, Book]:
        """The Book of each assigned partition."""
        return {tp: part.state for tp, part in self.loop.parts.items()}

    @property
    def ready(self) -> bool:
        """True once partitions are assigned and every one has replayed to its log end."""
        return self.loop.ready

    def health(self) -> dict[str, Any]:
        """What GET /healthz answers."""
        return {
            "kafka": self.ready,
            "ready": self.ready,
            "partitions": len(self.loop.parts),
            "lanes": len(self.lanes),
        }

    async def run(self, stopping: asyncio.Event) -> None:
        """Consume until ``stopping`` is set."""
        await self.publisher.start(wait=True)
        await self.subscriptions_table.start()
        try:
            await self._read_the_subscriptions(stopping)
            await self.loop.run(stopping)
        finally:
            await self.subscriptions_table.stop()
            await self.deps.sender.close()
            await self.publisher.stop()

    async def _read_the_subscriptions(self, stopping: asyncio.Event) -> None:
        """Wait until hookrun.subscriptions is read: the replay plans deliveries by the
        subscriptions it knows and cancels retries to those it does not, so it must know every
        one made through the admin API first."""
        delay = 0.2
        while not stopping.is_set():
            try:
                await self.subscriptions_table.catch_up()
                return
            except KafkaUnavailable as exc:
                # A refused request fails at once: pause, doubling, as ensure_topics_forever does.
                log.warning("waiting for hookrun.subscriptions (%s); again in %.1fs", exc, delay)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), delay)
                delay = min(delay * 2, 5.0)

    # -- the loop's hooks -----------------------------------------------------------------

    def open(self, tp: TopicPartition) -> Book:
        return Book(partition=tp.partition)

    async def went_live(self, part: Partition[Book]) -> None:
        book = part.state
        book.touched.clear()
        pending = book.pending()
        log.info("%s: live, %d deliveries pending", part.tp, len(pending))
        for delivery in pending:
            self.schedule(delivery)
        self._redeliver_unknown(part)

    async def handled(self, parts: Sequence[Partition[Book]]) -> None:
        for part in parts:
            book = part.state
            if part.live:
                for delivery in book.touched:
                    self.schedule(delivery)
                self._redeliver_unknown(part)
            book.touched.clear()

    async def revoked(self, part: Partition[Book]) -> None:
        for delivery in part.state.deliveries.values():
            delivery.revoked = True
            if delivery.timer is not None:
                delivery.timer.cancel()

    def safe(self, part: Partition[Book]) -> Commit:
        """The low watermark: the oldest RunFinished with an unfinished delivery."""
        return Commit(part.state.low_watermark(part.position))

    async def drain(self) -> None:
        """Attempts already made are recorded before the last commit (if Kafka lets us)."""
        for lane in self.lanes.values():
            for worker in lane.workers:
                worker.cancel()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5.0):
                await self.recorder.drain()
        self.recorder.stop()

    # -- scheduling and recording --------------------------------------------------------

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
        if delay > 0 and why_canceled(delivery, self.deps) is not None:
            delay = 0  # to be canceled: recorded now, not when the retry would have been due
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
            tp = TopicPartition(self.topic, delivery.partition)
            for event in caused:
                events.append(event)
                # Its echo from this partition then needs no decoding: it is applied below.
                self.loop.expect_echo(tp, event)
        await self.loop.publish(events)
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
        part = self.loop.parts.get(TopicPartition(self.topic, delivery.partition))
        for event in events:
            self.disabled(event)
            if part is not None:
                for handler in self._table.get(type(event), ()):
                    await handler(event, -1, part.state)
        if part is not None:
            part.state.touched.clear()

    def _redeliver_unknown(self, part: Partition[Book]) -> None:
        """Redeliveries asked for runs older than the Book: find each run in the partition."""
        for request, offset in part.state.unknown:
            self._spawn(self._find_run_and_redeliver(part.tp, request, offset))
        part.state.unknown.clear()

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def load_run(self, partition: int, offset: int) -> RunFinished | None:
        """The RunFinished at ``offset`` of the runs topic's ``partition``; None if it is not
        there (any more). A redelivery of a run the Book keeps only as Delivered reads it."""
        tp = TopicPartition(self.topic, partition)
        consumer = self._reader()
        await consumer.start()
        try:
            consumer.assign([tp])
            consumer.seek(tp, offset)
            async with asyncio.timeout(10.0):
                while not (records := (await consumer.getmany(tp, timeout_ms=500)).get(tp)):
                    if (await consumer.end_offsets([tp]))[tp] <= offset:
                        return None
        finally:
            await consumer.stop()
        # Below the log start (retention) the reader resets to the earliest record left.
        if records[0].offset != offset:
            return None
        try:
            event = decode(records[0].value, records[0].headers)
        except (InvalidEvent, UnknownEventType):
            return None
        return event if isinstance(event, RunFinished) else None

    async def _find_run_and_redeliver(
        self, tp: TopicPartition, request: RedeliveryRequested, before: int
    ) -> None:
        """A redelivery of a run older than the Book: find its RunFinished in the partition."""
        consumer = self._reader()
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
        part = self.loop.parts.get(tp)
        if found is None or part is None:
            log.warning("redelivery of unknown run %s ignored", request.run_id)
            return
        part.state.remember(*found)
        await self.loop.dispatch(tp, request, before)


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
        sealer=sealer_of(settings.hookrun_secrets_key),
    )
    bootstrap, namespace = settings.kafka_bootstrap_servers, settings.hookrun_namespace
    consumer = GroupConsumer(
        **consumer_settings(bootstrap, "notifier", group=group_of(namespace)),
        fetch_min_bytes=FETCH_MIN_BYTES,
    )
    return Notifier(
        deps,
        consumer=consumer,
        publisher=Publisher(bootstrap, "notifier", namespace=namespace),
        bootstrap=bootstrap,
        namespace=namespace,
        concurrency=settings.hookrun_notifier_concurrency,
    )


async def _main(settings: Settings, config: HookrunConfig) -> None:
    await ensure_topics_forever(
        settings.kafka_bootstrap_servers, namespace=settings.hookrun_namespace
    )
    notifier = build(settings, config)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    metrics.watch(lambda: [d for book in notifier.books.values() for d in book.deliveries.values()])
    health = None
    if settings.hookrun_metrics_port:
        health = await serve_health(
            settings.hookrun_metrics_port, notifier.health, host=settings.hookrun_metrics_host
        )
    try:
        await notifier.run(stopping)
    finally:
        if health is not None:
            health.close()


def main() -> None:
    """Run the notifier with the settings from the environment."""
    settings = Settings()
    logs.configure("notifier", settings.log_level, settings.log_format)
    tracing.start("notifier")
    try:
        config = load_config(settings.hookrun_config)
    except ConfigError as exc:
        print(f"hookrun notifier: invalid config\n{exc}", file=sys.stderr)
        raise SystemExit(2) from exc
    import uvloop

    uvloop.run(_main(settings, config))


if __name__ == "__main__":
    main()
