"""Sending and recording: a lane of workers per subscription, and the recorder they share."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from hookrun.events.base import Event
from hookrun.events.notifications import DeliveryAttempted, DeliveryCanceled, DeliveryExhausted
from hookrun.notifier import handlers, metrics
from hookrun.notifier.handlers import Delivery

if TYPE_CHECKING:
    from hookrun.notifier.app import Notifier

log = logging.getLogger("hookrun.notifier")


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
            metrics.attempted(delivery, events)
            _log_outcome(delivery, events)
            # The delivery stays in flight until its events are durable (Recorder).
            await self._notifier.recorder.record(delivery, events)


def _log_outcome(delivery: Delivery, events: list[Event]) -> None:
    """A success at INFO (one line per run and subscription), anything else at WARNING; never
    the URL, which may hold the subscriber's secret (Slack's, for one)."""
    attempted = next((e for e in events if isinstance(e, DeliveryAttempted)), None)
    if attempted is None:
        _log_canceled(delivery, events)
        return
    succeeded = attempted.outcome == "succeeded"
    level = logging.INFO if succeeded else logging.WARNING
    if not log.isEnabledFor(level):
        return
    sub = delivery.subscription
    gave_up = any(isinstance(e, DeliveryExhausted) for e in events)
    log.log(
        level,
        "delivery %s of run %s to %s: attempt %d %s (HTTP %s)%s",
        delivery.message_id,
        delivery.run_id,
        sub.id,
        attempted.attempt,
        attempted.outcome,
        attempted.status_code if attempted.status_code is not None else "-",
        "; given up" if gave_up else "",
        extra={
            "run_id": delivery.run_id,
            "trigger_id": sub.trigger_id,
            "subscription_id": sub.id,
            "trace_id": attempted.trace.trace_id if attempted.trace is not None else None,
        },
    )


def _log_canceled(delivery: Delivery, events: list[Event]) -> None:
    """A delivery given up without an attempt, at INFO: a change someone made caused it."""
    canceled = next((e for e in events if isinstance(e, DeliveryCanceled)), None)
    if canceled is None:
        return
    sub = delivery.subscription
    log.info(
        "delivery %s of run %s to %s: canceled after %d attempt(s): %s",
        delivery.message_id,
        delivery.run_id,
        sub.id,
        canceled.attempts,
        canceled.reason,
        extra={
            "run_id": delivery.run_id,
            "trigger_id": sub.trigger_id,
            "subscription_id": sub.id,
            "trace_id": canceled.trace.trace_id if canceled.trace is not None else None,
        },
    )


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
