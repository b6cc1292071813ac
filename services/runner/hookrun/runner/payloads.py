"""Payload inputs of pipelines, read by position from the launches that hold them.

A pipeline definition refers to the TriggerLaunched whose request body is its payload input
(decision 0036); a copy reads that body from hookrun.runs when it is made. Bodies read are
held in a cache bounded by size, so a runner's memory does not grow with the pipelines ever
defined.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from hookrun.events import topics
from hookrun.events.codec import InvalidEvent, UnknownEventType, decode
from hookrun.events.kafka import consumer_settings
from hookrun.events.runs import LaunchRef, TriggerLaunched
from hookrun.runner.context import SourceLoading, SourceUnavailable

log = logging.getLogger("hookrun.runner")

#: Characters of base64 bodies the cache holds at most (a larger single body is held alone).
CACHE_CHARS = 16 * 1024 * 1024
#: Launches that could not be read, remembered so the runs waiting on them fail their copy.
FAILURES = 1024
#: How long reads of one launch are retried while Kafka does not answer before the copy fails.
GIVE_UP_S = 300.0

#: A launch by position: run id, partition, offset.
Key = tuple[str, int, int]


def key_of(ref: LaunchRef) -> Key:
    return (ref.run_id, ref.partition, ref.offset)


class Bodies:
    """Base64 request bodies by launch, least recently used first out, at most ``limit`` chars."""

    def __init__(self, limit: int = CACHE_CHARS) -> None:
        self.limit = limit
        self.size = 0
        self._items: OrderedDict[Key, str] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: Key) -> str | None:
        body = self._items.get(key)
        if body is not None:
            self._items.move_to_end(key)
        return body

    def put(self, key: Key, body: str) -> None:
        old = self._items.pop(key, None)
        if old is not None:
            self.size -= len(old)
        self._items[key] = body
        self.size += len(body)
        while self.size > self.limit and len(self._items) > 1:
            _, evicted = self._items.popitem(last=False)
            self.size -= len(evicted)


class _Gone(Exception):
    """The launch is not (or no longer) where the reference says."""


class LaunchReader:
    """Reads launches' request bodies from hookrun.runs by position, one at a time.

    :meth:`body` answers from the cache or queues a read and raises SourceLoading; each read
    that ends (with the body or for good without it) calls ``on_read``, so the runs waiting on
    it are reconciled again.
    """

    def __init__(
        self,
        bootstrap: str,
        *,
        namespace: str = topics.NAMESPACE,
        cache_chars: int = CACHE_CHARS,
        read_timeout_s: float = 10.0,
    ) -> None:
        self.topic = topics.named(topics.RUNS, namespace)
        self._settings = consumer_settings(bootstrap, "runner", group=None)
        self.bodies = Bodies(cache_chars)
        self.failed: OrderedDict[Key, str] = OrderedDict()
        self.on_read: Callable[[], None] = lambda: None
        self._timeout_s = read_timeout_s
        self._queue: asyncio.Queue[LaunchRef] = asyncio.Queue()
        self._queued: set[Key] = set()
        self._task: asyncio.Task[None] | None = None
        self._consumer: AIOKafkaConsumer | None = None

    def body(self, ref: LaunchRef) -> str:
        """The base64 body of the launch at ``ref``; raises SourceLoading while it is read and
        SourceUnavailable when it cannot be."""
        key = key_of(ref)
        body = self.bodies.get(key)
        if body is not None:
            return body
        failure = self.failed.get(key)
        if failure is not None:
            raise SourceUnavailable(failure)
        if key not in self._queued:
            self._queued.add(key)
            self._queue.put_nowait(ref)
            if self._task is None:
                self._task = asyncio.create_task(self._work())
        raise SourceLoading(f"reading the launch of run {ref.run_id}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._close()

    async def _close(self) -> None:
        if self._consumer is not None:
            consumer, self._consumer = self._consumer, None
            with contextlib.suppress(Exception):
                await consumer.stop()

    async def _work(self) -> None:
        while True:
            ref = await self._queue.get()
            key = key_of(ref)
            started, delay = time.monotonic(), 0.5
            while True:
                try:
                    self.bodies.put(key, await self._read(ref))
                except _Gone as exc:
                    self._fail(key, f"the payload input of run {ref.run_id} cannot be read: {exc}")
                except (KafkaError, TimeoutError, OSError) as exc:
                    await self._close()
                    if time.monotonic() - started < GIVE_UP_S:
                        log.warning("reading the launch of run %s: %r; again", ref.run_id, exc)
                        await asyncio.sleep(delay)
                        delay = min(delay * 2, 10.0)
                        continue
                    self._fail(key, f"the payload input of run {ref.run_id} was not read: {exc!r}")
                break
            self._queued.discard(key)
            self.on_read()

    def _fail(self, key: Key, reason: str) -> None:
        log.warning("%s", reason)
        self.failed[key] = reason
        while len(self.failed) > FAILURES:
            self.failed.popitem(last=False)

    async def _read(self, ref: LaunchRef) -> str:
        if self._consumer is None:
            consumer = AIOKafkaConsumer(**self._settings)
            await consumer.start()
            self._consumer = consumer
        consumer = self._consumer
        tp = TopicPartition(self.topic, ref.partition)
        consumer.assign([tp])
        consumer.seek(tp, ref.offset)
        async with asyncio.timeout(self._timeout_s):
            while True:
                batch = await consumer.getmany(tp, timeout_ms=500, max_records=1)
                if batch.get(tp):
                    record = batch[tp][0]
                    break
                end = (await consumer.end_offsets([tp]))[tp]
                if end <= ref.offset:
                    raise _Gone(f"partition {ref.partition} ends before offset {ref.offset}")
        # Out of range, the consumer resets to the earliest record left.
        if record.offset < ref.offset:
            raise _Gone(f"partition {ref.partition} ends before offset {ref.offset}")
        if record.offset > ref.offset:
            raise _Gone(f"offset {ref.offset} of partition {ref.partition} is no longer kept")
        try:
            event = decode(record.value, record.headers)
        except (InvalidEvent, UnknownEventType) as exc:
            raise _Gone(f"the record there does not decode: {exc}") from None
        if not isinstance(event, TriggerLaunched) or event.run_id != ref.run_id:
            raise _Gone(f"offset {ref.offset} of partition {ref.partition} is not its launch")
        return event.request.body_b64
