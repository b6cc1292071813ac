"""Appends the runner's events until Kafka acknowledges them; an unrecordable one ends its run."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from aiokafka.errors import KafkaTimeoutError

from hookrun.events import topics, tracing
from hookrun.events.base import Event, utcnow
from hookrun.events.codec import Record, UnrecordableEvent, encode
from hookrun.events.kafka import KafkaUnavailable
from hookrun.events.runs import (
    ErrorDetail,
    ExecutionFinished,
    PipelineDefined,
    RunFinished,
    RunStatus,
)
from hookrun.events.service import PublisherClient
from hookrun.events.tracing import TraceContext
from hookrun.runner import metrics
from hookrun.runner.outcomes import forced_finish
from hookrun.runner.pipelines import PipelineIndex
from hookrun.runner.state import RunState, RunTable

log = logging.getLogger("hookrun.runner")


class Appender:
    """Appends a runner's events in the order its reconciles produced them."""

    def __init__(
        self,
        publisher: PublisherClient,
        table: RunTable,
        index: PipelineIndex,
        *,
        owns: Callable[[RunState], bool],
        expect_echo: Callable[[RunState, Event], None],
        stopping: asyncio.Event,
        fail: Callable[[BaseException], None],
    ) -> None:
        """``expect_echo(run, event)``: ``event`` was applied to the owned ``run`` before its
        sending, so its echo from the log changes nothing (see ConsumeLoop.expect_echo)."""
        self.publisher = publisher
        self._table = table
        self._index = index
        self._owns = owns
        self._expect_echo = expect_echo
        self._stopping = stopping
        self._fail = fail
        # Held only while records are handed to the producer, so sends keep the order in
        # which reconciles produced them (per key, Kafka keeps that order).
        self._send_lock = asyncio.Lock()

    async def append(
        self, events: Sequence[Event], *, sent: Callable[[], None] | None = None
    ) -> set[str]:
        """Append events (acks=all), sending them again until Kafka acknowledges them.

        ``sent`` is called once, as soon as the records are handed to the producer: work that
        may happen while they are in flight (but must not be visible before they are
        acknowledged) overlaps the round trip.

        A broker that restarts or loses leadership only delays the runner: what its executions
        reported is kept and appended once the broker is back, instead of being thrown away
        with the session (which would abort every run under way). A repeated send may append an
        event twice; every consumer applies events idempotently (by id, first writer wins).
        Errors no retry can mend (a producer fenced or closed) stop the session: its successor
        replays. An event that cannot be recorded at all (too large, too deep) ends its run
        instead (see _records); returns the ids of the runs ended so.
        """
        if not events:
            if sent is not None:
                sent()
            return set()
        records, ended = self._records(events)
        delay = 0.2
        while True:
            try:
                started = time.perf_counter()
                async with self._send_lock:
                    futures = [await self.publisher.send_record(record) for record in records]
                if sent is not None:
                    sent()
                    sent = None
                await self.publisher.wait(futures)
                metrics.ACKED.observe(time.perf_counter() - started)
                return ended
            except KafkaUnavailable as exc:
                if self._stopping.is_set():
                    raise
                if not _retriable(exc):
                    self._fail(exc)
                    raise
                log.warning(
                    "kafka did not acknowledge %d events (%s); sending them again in %.1f s",
                    len(records),
                    exc,
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    def _records(self, events: Sequence[Event]) -> tuple[list[Record], set[str]]:
        """Encode ``events``; a run with an event that cannot be recorded ends as FAILURE.

        Appending such an event would fail at every replay and wedge the partition, so the
        run's RunFinished (without the payload and outputs) takes its place, and the run's later
        events in ``events`` are dropped. Returns the records and the ids of the runs ended.

        Callers applied the events to the runs of the table without awaiting since, so a run
        found here (owned, live) holds them: the echo of each event recorded is expected here,
        before any wait.
        """
        stamp = self.publisher.source
        records: list[Record] = []
        ended: set[str] = set()
        for event in events:
            run_id = getattr(event, "run_id", "")
            if run_id in ended:
                continue
            run = self._table.runs.get(run_id)
            # Every event of a run carries its launch's trace context (also after a replay:
            # the run's TriggerLaunched is replayed with it).
            trace = None if run is None or run.launched is None else run.launched.trace
            try:
                # The service stamps itself as the source while encoding (no model copy).
                source = stamp if event.source == "hookrun" else None
                record = encode(event, source=source, trace=trace)
            except UnrecordableEvent as exc:
                ended.add(run_id)
                finish = self._end_unrecordable(event, str(exc))
                if finish is None:
                    continue
                event, record = finish, encode(finish, source=stamp, trace=trace)
            if isinstance(event, PipelineDefined):
                self._index.remember(event)
            records.append(record)
            if run is not None and trace is not None and tracing.enabled():
                record_spans(run, event, trace)
            if type(event).topic == topics.RUNS and run is not None and self._owns(run):
                self._expect_echo(run, event)
        return records, ended

    def _end_unrecordable(self, event: Event, reason: str) -> RunFinished | None:
        """The RunFinished that ends the run of an event that cannot be recorded (see _records)."""
        run = self._table.runs.get(getattr(event, "run_id", ""))
        if run is None or run.launched is None:
            log.error("dropping an event that cannot be recorded: %s", reason)
            return None
        log.error("run %s ends as FAILURE: %s", run.run_id, reason)
        error = ErrorDetail(
            message=f"the run's events cannot be recorded: {reason}", name="UnrecordableEvent"
        )
        outcome = event if isinstance(event, RunFinished) else None
        finish = forced_finish(run, error, utcnow(), outcome)
        try:
            encode(finish)
        except UnrecordableEvent:  # too many executions to list
            finish = finish.model_copy(update={"executions": []})
        # Nothing more starts for it; the reconcile whose append carries the finish forgets it.
        run.finished = finish
        return finish


def record_spans(run: RunState, event: Event, trace: TraceContext) -> None:
    """The span of what ``event`` ends, once it is appended: an execution, or the whole run.

    Recorded from the times the events hold, so an execution ended by a successor runner
    (aborted after a takeover) gets its span as well.
    """
    if isinstance(event, ExecutionFinished):
        ex = run.executions.get(event.execution_id)
        step = ex.created.step if ex is not None else "step"
        start = event.started_at or (ex.created.occurred_at if ex is not None else None)
        attributes: dict[str, Any] = {
            "hookrun.run_id": run.run_id,
            "hookrun.execution_id": event.execution_id,
            "hookrun.step": step,
            "hookrun.status": str(event.status),
        }
        if event.exit_code is not None:
            attributes["process.exit.code"] = event.exit_code
        tracing.record_span(
            f"execute {step}",
            parent=trace,
            start=start or event.completed_at,
            end=event.completed_at,
            attributes=attributes,
            error=None if event.status is RunStatus.SUCCESS else _why(event.status, event.error),
        )
    elif isinstance(event, RunFinished):
        tracing.record_span(
            f"run {event.trigger_id}",
            parent=trace,
            start=event.started_at,
            end=event.completed_at,
            attributes={
                "hookrun.run_id": run.run_id,
                "hookrun.trigger_id": event.trigger_id,
                "hookrun.status": str(event.status),
                "hookrun.execution_count": event.execution_count,
            },
            error=None
            if event.ok
            else _why(event.status, event.error.message if event.error else None),
        )


def _why(status: RunStatus, error: str | None) -> str:
    return f"{status}: {error}" if error else str(status)


def _retriable(exc: KafkaUnavailable) -> bool:
    """Whether sending again can succeed: timeouts and lost leaders/connections, not a fenced or
    closed producer or a record the broker refuses."""
    cause = exc.__cause__
    if cause is None or isinstance(cause, TimeoutError | KafkaTimeoutError):
        return True
    return bool(getattr(cause, "retriable", False))
