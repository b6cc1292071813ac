"""The runner's consume loop: replay, live dispatch, echo skipping, lease sweeps, commits."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.structs import OffsetAndMetadata

from hookrun.config import HookrunConfig
from hookrun.events.base import Event, utcnow
from hookrun.events.kafka import Publisher, decode_or_dead_letter
from hookrun.events.limits import MAX_JSON_DEPTH, MAX_OUTPUT_BYTES
from hookrun.events.runs import ErrorDetail, ExecutionFinished, RunStatus
from hookrun.runner.appender import Appender
from hookrun.runner.context import Context, Plan
from hookrun.runner.executor import Executor
from hookrun.runner.handlers import HANDLERS, RECONCILE, Handlers
from hookrun.runner.isolation import Isolation
from hookrun.runner.outcomes import forced_finish
from hookrun.runner.partitions import (
    MAX_REPLAY_REREADS,
    Listener,
    PartitionState,
    decode_watermark,
    encode_watermark,
)
from hookrun.runner.pipelines import PipelineIndex
from hookrun.runner.processes import ProcessExecutor
from hookrun.runner.reconcile import needs_pipeline_lookup
from hookrun.runner.specs import execution_spec
from hookrun.runner.state import RunState, RunTable

log = logging.getLogger("hookrun.runner")

#: The consume loop commits at most this often (the lease sweeper commits as well).
COMMIT_INTERVAL_S = 0.5
#: Records per getmany at most (fewer when the executions' queue is nearly full).
MAX_RECORDS = 256

#: Runs with handlers to run, by run id: each run with the handlers its events triggered.
Due = dict[str, tuple[RunState, Handlers]]


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
        isolation: Isolation | None = None,
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
            isolation=isolation,
        )
        # Held while a batch, a rebalance step or a sweep changes partitions or commits.
        self._lock = asyncio.Lock()
        self._background: set[asyncio.Task[Any]] = set()
        self.fatal: BaseException | None = None
        self.stopping = asyncio.Event()
        self.appender = Appender(
            publisher, self.table, index, owns=self.owns, stopping=self.stopping, fail=self._fail
        )
        self._committed_at = 0.0
        #: Executions waiting for a slot beyond which the runner stops taking launches.
        self.max_backlog = max_backlog if max_backlog is not None else 4 * concurrency
        self._paused = False

    @property
    def listener(self) -> ConsumerRebalanceListener:
        return Listener(self.assigned, self.revoked)

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

    def _plan(self, run: RunState, handlers: Handlers, ctx: Context) -> Plan:
        """What ``handlers`` plan for ``run``, or a FAILURE RunFinished when one raises, so no
        run fails every replay."""
        plan = Plan()
        try:
            for handler in handlers:
                plan.add(handler(run, ctx))
            return plan
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
        due: Due = {}
        for event in events:
            run = self.table.runs.get(getattr(event, "run_id", ""))
            if run is None:
                continue
            run.apply(event)
            handlers = HANDLERS.get(type(event))
            if handlers and self.owns(run):
                _trigger(due, run, handlers)
        await self.dispatch(due.values(), first=events)

    async def reconcile(self, runs: Iterable[RunState]) -> None:
        """Reconcile ``runs`` whatever their events were (a takeover, an expired lease)."""
        await self.dispatch([(run, RECONCILE) for run in runs])

    async def dispatch(
        self, due: Iterable[tuple[RunState, Handlers]], *, first: Sequence[Event] = ()
    ) -> None:
        """Run each run's handlers, append ``first`` and the events they planned, then start and
        stop executions.

        The executions to start are prepared (work directory, files) while the append is in
        flight, and held: a process starts only once its ExecutionCreated is acknowledged, so a
        crash can never leave an execution running that the log does not know of.
        """
        due = list(due)
        if any(needs_pipeline_lookup(r, self.config) for r, _ in due):
            await self.index.catch_up()
        ctx = self.context()
        plans = [(run, self._plan(run, handlers, ctx)) for run, handlers in due]
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
            ended = await self.appender.append(
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
            # Only the append that carried the run's RunFinished may end it here: a concurrent
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
        due: Due = {}
        applied = self.appender.applied
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
                    # position; after a few tries it is a real gap (docs/decisions/0016).
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
                if part.live and applied and _is_own_echo(record, applied):
                    continue
                event = await decode_or_dead_letter(self.publisher, record)
                if event is None:
                    continue
                run = self.table.apply(event, tp.partition, record.offset)
                if run is None or not part.live:
                    continue
                handlers = HANDLERS.get(type(event))
                if handlers:
                    seen = due.get(run.run_id)
                    if seen is None or seen[1] is not handlers:  # else noted already
                        _trigger(due, run, handlers)
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
                        _trigger(due, run, RECONCILE)
        if due:
            await self.dispatch(due.values())
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
            owned = self.parts.get(tp.partition)
            if owned is not None:
                owned.last_commit = (om.offset, decode_watermark(om.metadata, om.offset))

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
                    now = time.monotonic()
                    full = now - last_full >= full_every
                    if full:
                        last_full = now
                        self._warn_stalled_replays()
                    runs = [
                        run
                        for run in self.table.runs.values()
                        if self.owns(run) and (full or self._lease_expired(run, now))
                    ]
                    if runs:
                        await self.reconcile(runs)
                    await self._commit()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("lease sweep failed")

    def _lease_expired(self, run: RunState, monotonic: float) -> bool:
        """An execution of ``run`` that no live process of this runner holds lost its lease."""
        return any(
            ex.started is not None
            and ex.lease_expired(monotonic)
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
                self.appender.forget(tp.partition)
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
                self.appender.forget(tp.partition)
                await self.executor.drop_partition(tp.partition)
                log.info("revoked partition %s", tp.partition)

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


def _is_own_echo(record: Any, applied: dict[bytes, int]) -> bool:
    """True (and forgotten) if ``record`` carries an event this process applied before sending."""
    for name, value in record.headers or ():
        if name == "ce_id":
            return applied.pop(bytes(value), None) is not None
    return False


def _trigger(due: Due, run: RunState, handlers: Handlers) -> None:
    """Note that ``handlers`` are to run for ``run``: once each, however many events of the
    batch triggered them, in the order they were first triggered."""
    seen = due.get(run.run_id)
    if seen is None:
        due[run.run_id] = (run, handlers)
    elif seen[1] is not handlers:
        due[run.run_id] = (run, (*seen[1], *(h for h in handlers if h not in seen[1])))
