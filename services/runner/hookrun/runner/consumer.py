"""The runner as a service of the shared consume loop: run state, dispatch, leases, commits.

The :class:`~hookrun.events.consumer.ConsumeLoop` replays each assigned partition of hookrun.runs
into the :class:`RunTable` and then feeds it live records; the runner reconciles the runs those
records move on, and commits the position with the partition's low watermark (the launch of its
oldest unfinished run), where a successor's replay starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from aiokafka import TopicPartition

from hookrun.config import HookrunConfig
from hookrun.events import topics
from hookrun.events.base import Event, utcnow
from hookrun.events.clients import Commit, ConsumerClient
from hookrun.events.consumer import ConsumeLoop
from hookrun.events.kafka import KafkaUnavailable
from hookrun.events.limits import MAX_JSON_DEPTH, MAX_OUTPUT_BYTES
from hookrun.events.runs import ErrorDetail, ExecutionFinished, RunStatus
from hookrun.events.service import Partition, PublisherClient, Service
from hookrun.runner import metrics
from hookrun.runner.appender import Appender
from hookrun.runner.context import Context, Plan
from hookrun.runner.executor import Executor
from hookrun.runner.handlers import EVENTS, HANDLERS, RECONCILE, Handlers
from hookrun.runner.isolation import Isolation
from hookrun.runner.outcomes import forced_finish
from hookrun.runner.pipelines import PipelineIndex
from hookrun.runner.processes import ProcessExecutor
from hookrun.runner.reconcile import needs_pipeline_lookup
from hookrun.runner.specs import execution_spec
from hookrun.runner.state import RunState, RunTable
from hookrun.runner.versions import (
    ConfigStore,
    ConfigVersions,
    FakeConfigStore,
    configured,
    in_contexts,
)

log = logging.getLogger("hookrun.runner")

#: The consume loop commits at most this often (the lease sweep commits as well).
COMMIT_INTERVAL_S = 0.5
#: Records per getmany at most (fewer when the executions' queue is nearly full).
MAX_RECORDS = 256

#: Runs with handlers to run, by run id: each run with the handlers its events triggered.
Due = dict[str, tuple[RunState, Handlers]]

_WATERMARK = "lw="


def encode_watermark(offset: int) -> str:
    return f"{_WATERMARK}{offset}"


def decode_watermark(metadata: str | None, committed: int) -> int:
    """The replay start stored with a commit; the committed offset if there is none."""
    if metadata and metadata.startswith(_WATERMARK):
        with contextlib.suppress(ValueError):
            return min(int(metadata[len(_WATERMARK) :]), committed)
    return committed


class Runner(Service[int]):
    """Owns the runs of its partitions (the state of each is its number): replays them on
    assignment, then reconciles them live."""

    def __init__(
        self,
        *,
        config: HookrunConfig,
        consumer: ConsumerClient,
        publisher: PublisherClient,
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
        configs: ConfigStore | None = None,
    ) -> None:
        self.config = config
        #: The config each run was launched with (without a store: only the runner's own).
        self.versions = ConfigVersions(config, configs or FakeConfigStore())
        self.publisher = publisher
        self.index = index
        self.data_dir = data_dir.resolve()
        self.runner_id = runner_id
        self.lease_s = lease_s
        self.environ = dict(os.environ if environ is None else environ)
        self.table = RunTable()
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
        sweep_every_s = min(1.0, lease_s / 4)
        self.loop = ConsumeLoop(
            self,
            consumer=consumer,
            publisher=publisher,
            topics=[topics.RUNS],
            events=EVENTS,
            handlers={cls: [self._on_event] for cls in HANDLERS},
            max_records=MAX_RECORDS,
            commit_every_s=COMMIT_INTERVAL_S,
            sweep_every_s=sweep_every_s,
        )
        self._topic = topics.named(topics.RUNS, publisher.namespace)
        self._background: set[asyncio.Task[Any]] = set()
        self.fatal: BaseException | None = None
        self.stopping = asyncio.Event()
        self.appender = Appender(
            publisher,
            self.table,
            index,
            owns=self.owns,
            expect_echo=self._expect_echo,
            stopping=self.stopping,
            fail=self.fail,
        )
        #: Executions waiting for a slot beyond which the runner stops taking launches.
        self.max_backlog = max_backlog if max_backlog is not None else 4 * concurrency
        #: Runs the records of the batch being handled moved on (dispatched in handled()).
        self._due: Due = {}
        self._full_every = max(sweep_every_s, min(10.0, lease_s / 2))
        self._last_full = time.monotonic()

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
        """True while ``run``'s partition is assigned here and replayed (live)."""
        part = self.loop.parts.get(TopicPartition(self._topic, run.partition))
        return part is not None and part.live

    def _expect_echo(self, run: RunState, event: Event) -> None:
        self.loop.expect_echo(TopicPartition(self._topic, run.partition), event)

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

    def fail(self, exc: BaseException) -> None:
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
        runs = await configured(self.versions, due)
        if any(needs_pipeline_lookup(r, config) for r, _, config in runs):
            try:
                await self.index.catch_up()
            except KafkaUnavailable as exc:
                # As for an unreadable config version: those runs wait for the next reconcile.
                log.warning("pipelines unreadable now (%s): runs that copy one wait", exc)
                runs = [(r, h, c) for r, h, c in runs if not needs_pipeline_lookup(r, c)]
        plans = [
            (run, ctx, self._plan(run, handlers, ctx))
            for run, handlers, ctx in in_contexts(runs, self.context())
        ]
        held: list[str] = []
        unstartable: list[Event] = []

        def prepare() -> None:
            for run, ctx, plan in plans:
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

        appended = [*first, *(e for _, _, plan in plans for e in plan.events)]
        try:
            ended = await self.appender.append(appended, sent=prepare)
        except BaseException:
            for execution_id in held:
                self.executor.discard(execution_id)
            raise
        for _, _, plan in plans:
            for execution_id in plan.cancel:
                self.executor.cancel(execution_id)
        for execution_id in held:
            self.executor.release(execution_id)
        if unstartable:
            self._spawn(self.report(unstartable))
        metrics.executions_recorded(appended)
        for run, _, plan in plans:
            # Only the append that carried the run's RunFinished may end it here: a concurrent
            # reconcile may have applied a RunFinished whose append is still unacknowledged, and
            # until it is acknowledged the run must hold the low watermark.
            if run.finished is not None and (
                run.run_id in ended or any(e is run.finished for e in plan.events)
            ):
                trace = run.launched.trace if run.launched is not None else None
                metrics.run_finished(run.finished, trace.trace_id if trace is not None else None)
                self.table.forget(run.run_id, finished=True)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def run(self) -> None:
        """Consume until stopped (:attr:`stopping`); the loop sweeps leases meanwhile."""
        await self.loop.run(self.stopping)

    # -- the loop's hooks -----------------------------------------------------------------

    def open(self, tp: TopicPartition) -> int:
        return tp.partition

    async def replay_start(self, tp: TopicPartition, committed: Commit | None) -> int | None:
        """The low watermark committed with the offset: every unfinished run starts after it."""
        return None if committed is None else decode_watermark(committed.metadata, committed.offset)

    async def _on_event(self, event: Event, offset: int, partition: int) -> Sequence[Event]:
        """Apply a record to its run; once live, note the handlers the table names for it."""
        run = self.table.apply(event, partition, offset)
        if run is not None and self.owns(run):
            handlers = HANDLERS[type(event)]
            if handlers:
                _trigger(self._due, run, handlers)
        return ()

    async def went_live(self, part: Partition[int]) -> None:
        """Rebuilt: now do what the previous owner left undone."""
        unfinished = self.table.in_partition(part.state)
        log.info("partition %s live: %d unfinished runs", part.state, len(unfinished))
        for run in unfinished:
            if run.launched is None:
                self.table.forget(run.run_id, finished=False)
            else:
                _trigger(self._due, run, RECONCILE)

    async def handled(self, parts: Sequence[Partition[int]]) -> None:
        if self._due:
            due, self._due = self._due, {}
            await self.dispatch(due.values())

    async def revoked(self, part: Partition[int]) -> None:
        """Forget the partition's runs; its queued executions are left to the new owner."""
        self.table.drop_partition(part.state)
        await self.executor.drop_partition(part.state)

    def safe(self, part: Partition[int]) -> Commit:
        """The position, with the low watermark (where a successor's replay starts) as metadata.

        Committing rarely only lengthens a successor's replay: the watermark, not the position,
        keeps unfinished runs in it.
        """
        watermark = self.table.low_watermark(part.state, part.position)
        return Commit(part.position, encode_watermark(watermark))

    async def room(self) -> int | None:
        """Backpressure: while executions queue for a slot, launches wait on Kafka, not in
        memory (echoes count too: they are cheap)."""
        backlog = self.executor.backlog()
        if backlog >= self.max_backlog:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.executor.room(self.max_backlog), 1.0)
            backlog = self.executor.backlog()
        return max(0, self.max_backlog - backlog)

    async def sweep(self) -> None:
        """Reclaim executions whose lease ran out, and now and then reconcile every owned run.

        The full pass is a safety net: whatever a run misses (an event lost with a failed
        append, a reply that never came) is derived again from its state, as on a takeover.
        """
        now = time.monotonic()
        full = now - self._last_full >= self._full_every
        if full:
            self._last_full = now
            self._warn_stalled_replays()
        runs = [
            run
            for run in self.table.runs.values()
            if self.owns(run) and (full or self._lease_expired(run, now))
        ]
        if runs:
            await self.reconcile(runs)

    def _lease_expired(self, run: RunState, monotonic: float) -> bool:
        """An execution of ``run`` that no live process of this runner holds lost its lease."""
        return any(
            ex.started is not None
            and ex.lease_expired(monotonic)
            and self.executor.phase(ex.id) is None
            for ex in run.unfinished_executions()
        )

    def _warn_stalled_replays(self) -> None:
        for part in self.loop.parts.values():
            if not part.live and time.monotonic() - part.assigned_at > 30:
                log.warning(
                    "partition %s still replaying: at %s of %s",
                    part.state,
                    part.position,
                    part.replay_end,
                )

    def health(self) -> dict[str, Any]:
        return {
            "kafka": self.publisher.ready,
            "runner_id": self.runner_id,
            "partitions": sorted(part.state for part in self.loop.parts.values()),
            "assigned": self.loop.ready,
            # Readiness: Kafka takes appends, and every partition is assigned and replayed.
            "ready": self.publisher.ready and self.loop.ready,
            "runs": len(self.table.runs),
            "running": self.executor.running(),
            "backlog": self.executor.backlog(),
            "paused": self.loop.paused,
        }


def _trigger(due: Due, run: RunState, handlers: Handlers) -> None:
    """Note that ``handlers`` are to run for ``run``: once each, however many events of the
    batch triggered them, in the order they were first triggered."""
    seen = due.get(run.run_id)
    if seen is None:
        due[run.run_id] = (run, handlers)
    elif seen[1] is not handlers:
        due[run.run_id] = (run, (*seen[1], *(h for h in handlers if h not in seen[1])))
