"""Composition root of the runner: the consume loop, partition replay, leases and commits."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaTimeoutError
from aiokafka.structs import OffsetAndMetadata

from hookrun.config import ConfigError, HookrunConfig, load_config
from hookrun.events import topics
from hookrun.events.base import Event, utcnow
from hookrun.events.codec import Record, UnrecordableEvent, encode
from hookrun.events.kafka import (
    KafkaUnavailable,
    Publisher,
    consumer_settings,
    decode_or_dead_letter,
    ensure_topics_forever,
)
from hookrun.events.limits import MAX_JSON_DEPTH, MAX_OUTPUT_BYTES
from hookrun.events.runs import (
    ErrorDetail,
    ExecutionFinished,
    PipelineDefined,
    RunFinished,
    RunStatus,
)
from hookrun.runner.config import Settings
from hookrun.runner.context import Context, Plan
from hookrun.runner.executor import Executor
from hookrun.runner.handlers import HANDLERS
from hookrun.runner.outcomes import forced_finish
from hookrun.runner.pipelines import KafkaPipelineIndex, PipelineIndex
from hookrun.runner.processes import ProcessExecutor
from hookrun.runner.reconcile import needs_pipeline_lookup, reconcile
from hookrun.runner.specs import execution_spec
from hookrun.runner.state import RunState, RunTable

log = logging.getLogger("hookrun.runner")

_WATERMARK = "lw="
#: The consume loop commits at most this often (the lease sweeper commits as well).
COMMIT_INTERVAL_S = 0.5
#: Records per getmany at most (fewer when the executions' queue is nearly full).
MAX_RECORDS = 256


def new_runner_id() -> str:
    """`runner-<host>-<pid>-<random>`: each life of a process holds its own leases."""
    return f"runner-{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


def encode_watermark(offset: int) -> str:
    return f"{_WATERMARK}{offset}"


def decode_watermark(metadata: str | None, committed: int) -> int:
    """The replay start stored with a commit; the committed offset if there is none."""
    if metadata and metadata.startswith(_WATERMARK):
        with contextlib.suppress(ValueError):
            return min(int(metadata[len(_WATERMARK) :]), committed)
    return committed


#: How often a replay reads a partition again after a gap before it takes the gap as real.
MAX_REPLAY_REREADS = 3


@dataclass
class PartitionState:
    """One owned partition: replaying (rebuilding state, no side effects) until replay_end."""

    tp: TopicPartition
    position: int
    replay_end: int
    live: bool
    last_commit: tuple[int, int] | None = None
    assigned_at: float = field(default_factory=time.monotonic)
    #: Times the replay met a gap and read the partition again from its position.
    rereads: int = 0


class Runner:
    """Owns the runs of its partitions: replays them on assignment, then reconciles live."""

    def __init__(
        self,
        *,
        config: HookrunConfig,
        consumer: AIOKafkaConsumer,
        publisher: Publisher,
        index: PipelineIndex,
        data_dir: Path,
        runner_id: str,
        lease_s: float,
        concurrency: int,
        environ: Mapping[str, str] | None = None,
        executor: Executor | None = None,
        max_backlog: int | None = None,
        max_output_bytes: int = MAX_OUTPUT_BYTES,
        max_json_depth: int = MAX_JSON_DEPTH,
    ) -> None:
        self.config = config
        self.consumer = consumer
        self.publisher = publisher
        self.index = index
        self.data_dir = data_dir.resolve()
        self.runner_id = runner_id
        self.lease_s = lease_s
        self.environ = dict(os.environ if environ is None else environ)
        self.table = RunTable()
        self.parts: dict[int, PartitionState] = {}
        self.executor: Executor = executor or ProcessExecutor(
            self.data_dir,
            concurrency=concurrency,
            lease_s=lease_s,
            runner_id=runner_id,
            emit=self.report,
            max_output_bytes=max_output_bytes,
            max_json_depth=max_json_depth,
        )
        # Held while a batch, a rebalance step or a sweep changes partitions or commits.
        self._lock = asyncio.Lock()
        # Held only while records are handed to the producer, so sends keep the order in
        # which reconciles produced them (per key, Kafka keeps that order).
        self._send_lock = asyncio.Lock()
        self._background: set[asyncio.Task[Any]] = set()
        # ce_id -> partition of events this process applied to a live run before sending them:
        # their echo from the log changes nothing, so it is neither decoded nor applied again.
        self._applied: dict[bytes, int] = {}
        self.fatal: BaseException | None = None
        self.stopping = asyncio.Event()
        self._committed_at = 0.0
        #: Executions waiting for a slot beyond which the runner stops taking launches.
        self.max_backlog = max_backlog if max_backlog is not None else 4 * concurrency
        self._paused = False

    @property
    def listener(self) -> ConsumerRebalanceListener:
        return _Listener(self)

    def context(self) -> Context:
        return Context(
            config=self.config,
            runner_id=self.runner_id,
            now=utcnow(),
            environ=self.environ,
            phase=self.executor.phase,
            lookup_pipeline=self.index.lookup,
        )

    def owns(self, run: RunState) -> bool:
        part = self.parts.get(run.partition)
        return part is not None and part.live

    async def publish(
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
        # Callers applied the events to the runs of the table without awaiting since, so a run
        # found here (owned, live) holds them; registered before the lock, which may wait.
        for event in events:
            if type(event).topic == topics.RUNS:
                run = self.table.runs.get(getattr(event, "run_id", ""))
                if run is not None and self.owns(run):
                    self._applied[event.event_id.encode()] = run.partition
        records, ended = self._records(events)
        delay = 0.2
        while True:
            try:
                async with self._send_lock:
                    futures = [await self.publisher.send_record(record) for record in records]
                if sent is not None:
                    sent()
                    sent = None
                await self.publisher.wait(futures)
                return ended
            except KafkaUnavailable as exc:
                if self.stopping.is_set():
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
        """
        stamp = self.publisher.source
        records: list[Record] = []
        ended: set[str] = set()
        for event in events:
            run_id = getattr(event, "run_id", "")
            if run_id in ended:
                self._applied.pop(event.event_id.encode(), None)
                continue
            try:
                # The service stamps itself as the source while encoding (no model copy).
                record = encode(event, source=stamp if event.source == "hookrun" else None)
            except UnrecordableEvent as exc:
                self._applied.pop(event.event_id.encode(), None)
                ended.add(run_id)
                finish = self._end_unrecordable(event, str(exc))
                if finish is None:
                    continue
                record = encode(finish, source=stamp)
            if isinstance(event, PipelineDefined):
                self.index.remember(event)
            records.append(record)
        return records, ended

    def _end_unrecordable(self, event: Event, reason: str) -> RunFinished | None:
        """The RunFinished that ends the run of an event that cannot be recorded (see _records)."""
        run = self.table.runs.get(getattr(event, "run_id", ""))
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
        # Nothing more starts for it; the publish that carries the finish forgets it.
        run.finished = finish
        return finish

    def _plan(self, run: RunState, ctx: Context) -> Plan:
        """reconcile(), or a FAILURE RunFinished when it raises, so no run fails every replay."""
        try:
            return reconcile(run, ctx)
        except Exception as exc:
            log.exception("reconciling run %s failed: the run ends as FAILURE", run.run_id)
            if run.launched is None:
                return Plan()
            error = ErrorDetail(message=f"internal error: {exc!r}", name="InternalError")
            run.finished = forced_finish(run, error, ctx.now)
            return Plan(events=[run.finished])

    def _fail(self, exc: BaseException) -> None:
        log.error("cannot append events (%r): stopping; another runner will replay", exc)
        self.fatal = exc
        self.stopping.set()

    async def report(self, events: list[Event]) -> None:
        """Move runs on with what an execution reports; append both in one go.

        The reported events are applied first, like the events a reconcile emits, and sent
        ahead of what they cause (ExecutionFinished, then ActionCompleted and RunFinished):
        one acknowledgement instead of two. A finished run leaves the table (and so the low
        watermark) only once its RunFinished is acknowledged.
        """
        runs: dict[str, RunState] = {}
        for event in events:
            run = self.table.runs.get(getattr(event, "run_id", ""))
            if run is None:
                continue
            run.apply(event)
            if HANDLERS.get(type(event)) and self.owns(run):
                runs[run.run_id] = run
        await self.reconcile(runs.values(), first=events)

    async def reconcile(self, runs: Iterable[RunState], *, first: Sequence[Event] = ()) -> None:
        """Reconcile runs, append ``first`` and the events, then start and stop executions.

        The executions to start are prepared (work directory, files) while the append is in
        flight, and held: a process starts only once its ExecutionCreated is acknowledged, so a
        crash can never leave an execution running that the log does not know of.
        """
        runs = list(runs)
        if any(needs_pipeline_lookup(r, self.config) for r in runs):
            await self.index.catch_up()
        ctx = self.context()
        plans = [(run, self._plan(run, ctx)) for run in runs]
        held: list[str] = []
        unstartable: list[Event] = []

        def prepare() -> None:
            for run, plan in plans:
                for ex in plan.start:
                    # Another reconcile may hold it already (its phase is set at submit).
                    if (
                        ex.started
                        or ex.finished
                        or self.executor.phase(ex.id)
                        or run.cancel
                        or run.finished
                    ):
                        continue
                    spec = execution_spec(run, ex, ctx, self.data_dir)
                    if isinstance(spec, str):
                        unstartable.append(
                            ExecutionFinished(
                                run_id=run.run_id,
                                execution_id=ex.id,
                                status=RunStatus.FAILURE,
                                completed_at=utcnow(),
                                error=spec,
                            )
                        )
                    else:
                        self.executor.submit(spec, held=True)
                        held.append(ex.id)

        try:
            ended = await self.publish(
                [*first, *(e for _, plan in plans for e in plan.events)], sent=prepare
            )
        except BaseException:
            for execution_id in held:
                self.executor.discard(execution_id)
            raise
        for _, plan in plans:
            for execution_id in plan.cancel:
                self.executor.cancel(execution_id)
        for execution_id in held:
            self.executor.release(execution_id)
        if unstartable:
            self._spawn(self.report(unstartable))
        for run, plan in plans:
            # Only the publish that carried the run's RunFinished may end it here: a concurrent
            # reconcile may have applied a RunFinished whose append is still unacknowledged, and
            # until it is acknowledged the run must hold the low watermark.
            if run.finished is not None and (
                run.run_id in ended or any(e is run.finished for e in plan.events)
            ):
                self.table.forget(run.run_id, finished=True)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def run(self) -> None:
        """Consume until stopped; the sweeper watches leases and commits in the background."""
        sweeper = asyncio.create_task(self._sweep())
        try:
            while not self.stopping.is_set():
                # Backpressure: while executions queue for a slot, launches wait on Kafka, not
                # in memory. The consumer keeps polling (paused) so it stays in its group.
                backlog = self.executor.backlog()
                if backlog >= self.max_backlog:
                    self._pause(True)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.executor.room(self.max_backlog), 1.0)
                    backlog = self.executor.backlog()
                self._pause(backlog >= self.max_backlog)
                # No more records than there is room for (echoes count too: they are cheap).
                room = max(1, self.max_backlog - backlog)
                batches = await self.consumer.getmany(
                    timeout_ms=0 if self._paused else 200, max_records=min(MAX_RECORDS, room)
                )
                async with self._lock:
                    await self._handle(batches)
        finally:
            sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeper

    def _pause(self, full: bool) -> None:
        """Pause every assigned partition while ``full`` (again after a rebalance), else resume."""
        if full:
            self.consumer.pause(*self.consumer.assignment())
        elif self._paused:
            self.consumer.resume(*self.consumer.assignment())
        self._paused = full

    async def _handle(self, batches: Mapping[TopicPartition, list[Any]]) -> None:
        touched: dict[str, RunState] = {}
        for tp, records in batches.items():
            part = self.parts.get(tp.partition)
            if part is None:
                continue
            for record in records:
                if record.offset < part.position:
                    continue
                if record.offset > part.position and not part.live:
                    # `runs` is neither compacted nor transactional, so a gap is a fetch that
                    # raced the seek to the replay start; taking it as the start could miss a
                    # run's TriggerLaunched and leave the run unfinished. Read again from the
                    # position; after a few tries it is a real gap.
                    if part.rereads < MAX_REPLAY_REREADS:
                        part.rereads += 1
                        log.warning(
                            "partition %s replay got offset %s at position %s: reading again",
                            tp.partition,
                            record.offset,
                            part.position,
                        )
                        self.consumer.seek(tp, part.position)
                        break
                    log.warning(
                        "partition %s replay skipped offsets %s..%s",
                        tp.partition,
                        part.position,
                        record.offset - 1,
                    )
                part.position = record.offset + 1
                if part.live and self._applied and _is_own_echo(record, self._applied):
                    continue
                event = await decode_or_dead_letter(self.publisher, record)
                if event is None:
                    continue
                run = self.table.apply(event, tp.partition, record.offset)
                if run is not None and part.live and HANDLERS.get(type(event)):
                    touched[run.run_id] = run
        for part in self.parts.values():
            if part.live:
                continue
            part.position = max(part.position, await self.consumer.position(part.tp))
            if part.position >= part.replay_end:
                # Rebuilt: now do what the previous owner left undone.
                part.live = True
                unfinished = self.table.in_partition(part.tp.partition)
                log.info(
                    "partition %s replayed to %s: %d unfinished runs",
                    part.tp.partition,
                    part.replay_end,
                    len(unfinished),
                )
                for run in unfinished:
                    if run.launched is None:
                        self.table.forget(run.run_id, finished=False)
                    else:
                        touched[run.run_id] = run
        if touched:
            await self.reconcile(touched.values())
        # A commit is a round trip to the coordinator that every later launch would wait for;
        # at most one per COMMIT_INTERVAL_S here (the sweeper commits too). Committing less
        # often only lengthens a successor's replay: the watermark, not the position, keeps
        # unfinished runs in it.
        if time.monotonic() - self._committed_at >= COMMIT_INTERVAL_S:
            await self._commit()

    async def _commit(self) -> None:
        """Commit positions of live partitions, with the replay start in the metadata."""
        self._committed_at = time.monotonic()
        offsets = {}
        live = {p.tp.partition: p.position for p in self.parts.values() if p.live}
        watermarks = self.table.low_watermarks(live)
        for part in self.parts.values():
            if not part.live:
                continue
            watermark = watermarks[part.tp.partition]
            if part.last_commit != (part.position, watermark):
                offsets[part.tp] = OffsetAndMetadata(part.position, encode_watermark(watermark))
        if not offsets:
            return
        try:
            await self.consumer.commit(offsets)
        except Exception as exc:  # a rebalance is under way; the next owner replays from older
            log.info("commit skipped: %r", exc)
            return
        for tp, om in offsets.items():
            part = self.parts.get(tp.partition)
            if part is not None:
                part.last_commit = (om.offset, decode_watermark(om.metadata, om.offset))

    async def _sweep(self) -> None:
        """Reclaim executions whose lease ran out, commit watermarks that moved, and now and then
        reconcile every owned run.

        The full pass is a safety net: whatever a run misses (an event lost with a failed
        append, a reply that never came) is derived again from its state, as on a takeover.
        """
        interval = min(1.0, self.lease_s / 4)
        full_every = max(interval, min(10.0, self.lease_s / 2))
        last_full = time.monotonic()
        while True:
            await asyncio.sleep(interval)
            try:
                async with self._lock:
                    now = utcnow()
                    full = time.monotonic() - last_full >= full_every
                    if full:
                        last_full = time.monotonic()
                        self._warn_stalled_replays()
                    due = [
                        run
                        for run in self.table.runs.values()
                        if self.owns(run) and (full or self._lease_expired(run, now))
                    ]
                    if due:
                        await self.reconcile(due)
                    await self._commit()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("lease sweep failed")

    def _lease_expired(self, run: RunState, now: Any) -> bool:
        """An execution of ``run`` that no live process of this runner holds lost its lease."""
        return any(
            ex.started is not None
            and ex.lease_until is not None
            and ex.lease_until < now
            and self.executor.phase(ex.id) is None
            for ex in run.unfinished_executions()
        )

    def _warn_stalled_replays(self) -> None:
        for part in self.parts.values():
            if not part.live and time.monotonic() - part.assigned_at > 30:
                log.warning(
                    "partition %s still replaying: at %s of %s",
                    part.tp.partition,
                    part.position,
                    part.replay_end,
                )

    async def assigned(self, assigned: Iterable[TopicPartition]) -> None:
        """Seek each new partition to its low watermark; the loop replays it to its end."""
        tps = [tp for tp in assigned if tp.partition not in self.parts]
        if not tps:
            return
        async with self._lock:
            committed = await self.consumer._coordinator.fetch_committed_offsets(tps)
            begins = await self.consumer.beginning_offsets(tps)
            ends = await self.consumer.end_offsets(tps)
            for tp in tps:
                om = committed.get(tp)
                if om is None or om.offset < 0:
                    start = begins[tp]
                else:
                    start = max(begins[tp], decode_watermark(om.metadata, om.offset))
                self.consumer.seek(tp, start)
                self._forget_applied(tp.partition)
                self.parts[tp.partition] = PartitionState(
                    tp, position=start, replay_end=ends[tp], live=start >= ends[tp]
                )
                log.info("assigned partition %s: replay %s..%s", tp.partition, start, ends[tp])

    async def revoked(self, revoked: Iterable[TopicPartition]) -> None:
        """Forget revoked partitions' runs; their queued executions are left to the new owner."""
        async with self._lock:
            for tp in revoked:
                if self.parts.pop(tp.partition, None) is None:
                    continue
                self.table.drop_partition(tp.partition)
                self._forget_applied(tp.partition)
                await self.executor.drop_partition(tp.partition)
                log.info("revoked partition %s", tp.partition)

    def _forget_applied(self, partition: int) -> None:
        """A partition changes hands: its echoes must be applied again (the replay needs them)."""
        self._applied = {k: p for k, p in self._applied.items() if p != partition}

    def health(self) -> dict[str, Any]:
        return {
            "kafka": self.publisher.ready,
            "runner_id": self.runner_id,
            "partitions": sorted(self.parts),
            "assigned": bool(self.parts) and all(p.live for p in self.parts.values()),
            "runs": len(self.table.runs),
            "running": self.executor.running(),
            "backlog": self.executor.backlog(),
            "paused": self._paused,
        }


def _retriable(exc: KafkaUnavailable) -> bool:
    """Whether sending again can succeed: timeouts and lost leaders/connections, not a fenced or
    closed producer or a record the broker refuses."""
    cause = exc.__cause__
    if cause is None or isinstance(cause, TimeoutError | KafkaTimeoutError):
        return True
    return bool(getattr(cause, "retriable", False))


def _is_own_echo(record: Any, applied: dict[bytes, int]) -> bool:
    """True (and forgotten) if ``record`` carries an event this process applied before sending."""
    for name, value in record.headers or ():
        if name == "ce_id":
            return applied.pop(bytes(value), None) is not None
    return False


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, runner: Runner) -> None:
        self.runner = runner

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self.runner.revoked(revoked)

    async def on_partitions_assigned(self, assigned: Any) -> None:
        await self.runner.assigned(assigned)


async def _serve_health(runner: Runner, port: int) -> asyncio.Server:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            await reader.readuntil(b"\r\n\r\n")
            body = orjson.dumps(runner.health())
            writer.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                + f"content-length: {len(body)}\r\nconnection: close\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        writer.close()

    return await asyncio.start_server(answer, "127.0.0.1", port)


async def serve(settings: Settings, config: HookrunConfig) -> int:
    """Run one runner until SIGTERM/SIGINT; returns the exit code."""
    bootstrap, ns = settings.kafka_bootstrap_servers, settings.hookrun_namespace
    await ensure_topics_forever(bootstrap, namespace=ns)
    publisher = Publisher(bootstrap, "runner", namespace=ns)
    await publisher.start(wait=True)
    index = KafkaPipelineIndex(bootstrap, namespace=ns)
    await index.start()
    consumer = AIOKafkaConsumer(
        **{
            **consumer_settings(bootstrap, "runner", group=settings.group_id),
            "session_timeout_ms": settings.hookrun_runner_session_timeout_ms,
            "heartbeat_interval_ms": max(100, settings.hookrun_runner_session_timeout_ms // 10),
        }
    )
    runner_id = new_runner_id()
    runner = Runner(
        config=config,
        consumer=consumer,
        publisher=publisher,
        index=index,
        data_dir=settings.hookrun_data_dir,
        runner_id=runner_id,
        lease_s=settings.hookrun_runner_lease_s,
        concurrency=settings.hookrun_runner_concurrency,
        max_backlog=settings.hookrun_runner_max_backlog or None,
        max_output_bytes=settings.hookrun_max_output_bytes,
        max_json_depth=settings.hookrun_max_json_depth,
    )
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, runner.stopping.set)
    health = None
    if settings.hookrun_runner_health_port:
        health = await _serve_health(runner, settings.hookrun_runner_health_port)
    consumer.subscribe([topics.named(topics.RUNS, ns)], listener=runner.listener)
    await consumer.start()
    log.info("runner %s consuming %s", runner_id, topics.named(topics.RUNS, ns))
    try:
        await runner.run()
    except Exception:
        if runner.fatal is None and not runner.stopping.is_set():
            raise
        # An append no retry can mend (logged by _fail): end the session with 1.
    finally:
        for close in (runner.executor.stop, consumer.stop, index.stop, publisher.stop):
            try:
                await close()
            except BaseException as exc:
                # After a Kafka failure the session is discarded anyway; aiokafka's stop() can
                # then raise (even CancelledError from its fetcher), which must not end the
                # process instead of restarting the session.
                if runner.fatal is None:
                    raise
                log.warning("closing a failed session: %r", exc)
        if health is not None:
            health.close()
    return 1 if runner.fatal is not None else 0


def main() -> None:
    """Entry point: `python -m hookrun.runner`."""
    settings = Settings()
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    logging.getLogger("aiokafka").setLevel(
        logging.WARNING if settings.log_level.upper() != "TRACE" else logging.DEBUG
    )
    try:
        config = load_config(settings.hookrun_config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        sys.exit(2)
    # An append Kafka refused for good (a fenced or closed producer; a broker that is merely
    # away is waited for) ends the session with 1: its state is dropped and a fresh session
    # replays from the committed watermarks, exactly as a restarted process would. `make run`
    # supervises nothing, so the process must not die.
    while (code := asyncio.run(serve(settings, config))) == 1:
        log.warning("restarting the runner session after a Kafka failure")
        time.sleep(1.0)
    sys.exit(code)
