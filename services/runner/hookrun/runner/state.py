"""Run state rebuilt from a run's events: idempotent apply, keyed by ids, no I/O."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime

from hookrun.events.base import Event
from hookrun.events.runs import (
    ActionCompleted,
    ExecutionCreated,
    ExecutionFinished,
    ExecutionHeartbeat,
    ExecutionStarted,
    PipelineCreated,
    PipelineFinished,
    PipelineNodeSkipped,
    RunCancelRequested,
    RunFinished,
    RunStarted,
    TriggerLaunched,
)


@dataclass
class ExecutionState:
    """One execution: created, maybe started (by which runner, leased until when), maybe finished."""

    created: ExecutionCreated
    started: ExecutionStarted | None = None
    lease_until: datetime | None = None
    finished: ExecutionFinished | None = None

    @property
    def id(self) -> str:
        return self.created.execution_id

    @property
    def slot(self) -> tuple[int, str | None, str | None]:
        """What the execution is for: (action, pipeline, node). Retries share the slot."""
        c = self.created
        return c.action_index, c.pipeline_id, c.node


@dataclass
class PipelineState:
    created: PipelineCreated
    skipped: dict[str, str] = field(default_factory=dict)
    finished: PipelineFinished | None = None


@dataclass
class RunState:
    """Everything the runner knows about one run, rebuilt from the run's events."""

    run_id: str
    partition: int = -1
    launch_offset: int | None = None
    launched: TriggerLaunched | None = None
    started: RunStarted | None = None
    executions: dict[str, ExecutionState] = field(default_factory=dict)
    pipelines: dict[str, PipelineState] = field(default_factory=dict)
    actions: dict[int, ActionCompleted] = field(default_factory=dict)
    cancel: RunCancelRequested | None = None
    finished: RunFinished | None = None

    def apply(self, event: Event) -> bool:
        """Apply ``event``; return True if it changed the state.

        Idempotent: a redelivered event, or the echo of an event this runner emitted and
        applied already, changes nothing. The first of two conflicting events wins.
        """
        if isinstance(event, TriggerLaunched):
            if self.launched is None:
                self.launched = event
                return True
        elif isinstance(event, RunStarted):
            if self.started is None:
                self.started = event
                return True
        elif isinstance(event, ExecutionCreated):
            if event.execution_id not in self.executions:
                self.executions[event.execution_id] = ExecutionState(event)
                return True
        elif isinstance(event, ExecutionStarted | ExecutionHeartbeat):
            ex = self.executions.get(event.execution_id)
            if ex is None or ex.finished is not None:
                return False
            changed = False
            if isinstance(event, ExecutionStarted) and ex.started is None:
                ex.started = event
                changed = True
            if ex.lease_until is None or event.lease_until > ex.lease_until:
                ex.lease_until = event.lease_until
                changed = True
            return changed
        elif isinstance(event, ExecutionFinished):
            ex = self.executions.get(event.execution_id)
            if ex is not None and ex.finished is None:
                ex.finished = event
                return True
        elif isinstance(event, PipelineCreated):
            if event.pipeline_id not in self.pipelines:
                self.pipelines[event.pipeline_id] = PipelineState(event)
                return True
        elif isinstance(event, PipelineNodeSkipped):
            pipe = self.pipelines.get(event.pipeline_id)
            if pipe is not None and event.node not in pipe.skipped:
                pipe.skipped[event.node] = event.reason
                return True
        elif isinstance(event, PipelineFinished):
            pipe = self.pipelines.get(event.pipeline_id)
            if pipe is not None and pipe.finished is None:
                pipe.finished = event
                return True
        elif isinstance(event, ActionCompleted):
            if event.action_index not in self.actions:
                self.actions[event.action_index] = event
                return True
        elif isinstance(event, RunCancelRequested):
            if self.cancel is None:
                self.cancel = event
                return True
        elif isinstance(event, RunFinished) and self.finished is None:
            self.finished = event
            return True
        return False

    def latest(self) -> dict[tuple[int, str | None, str | None], ExecutionState]:
        """The newest attempt of each slot: a retry supersedes the attempt it replaces."""
        out: dict[tuple[int, str | None, str | None], ExecutionState] = {}
        for ex in self.executions.values():
            current = out.get(ex.slot)
            if current is None or ex.created.attempt > current.created.attempt:
                out[ex.slot] = ex
        return out

    def unfinished_executions(self) -> Iterator[ExecutionState]:
        return (ex for ex in self.executions.values() if ex.finished is None)


class RunTable:
    """The runs of the partitions this runner owns, plus a bounded memory of finished run ids."""

    def __init__(self, *, remember_finished: int = 100_000) -> None:
        self.runs: dict[str, RunState] = {}
        self._finished: OrderedDict[str, None] = OrderedDict()
        self._remember = remember_finished

    def apply(self, event: Event, partition: int, offset: int | None) -> RunState | None:
        """Apply one event of ``partition``; return the run it belongs to if the runner tracks it.

        A run is tracked from its TriggerLaunched on. Events of runs whose launch lies before the
        replay start (finished runs) are ignored, as are events of runs already finished.
        """
        run_id = getattr(event, "run_id", None)
        if run_id is None or run_id in self._finished:
            return None
        run = self.runs.get(run_id)
        if run is None:
            if not isinstance(event, TriggerLaunched):
                return None
            run = self.runs[run_id] = RunState(run_id, partition)
        if isinstance(event, TriggerLaunched) and run.launch_offset is None:
            run.launch_offset = offset
        run.apply(event)
        # Only a RunFinished read from the log ends the run here: one the runner emitted itself
        # may not be acknowledged yet, and until it is the run must hold the low watermark.
        if run.finished is not None and isinstance(event, RunFinished):
            self.forget(run_id, finished=True)
        return run

    def forget(self, run_id: str, *, finished: bool) -> None:
        """Drop a run's state; a finished run's id is remembered so a redelivery starts nothing."""
        self.runs.pop(run_id, None)
        if finished:
            self._finished[run_id] = None
            while len(self._finished) > self._remember:
                self._finished.popitem(last=False)

    def in_partition(self, partition: int) -> list[RunState]:
        return [r for r in self.runs.values() if r.partition == partition]

    def drop_partition(self, partition: int) -> None:
        """Forget the runs of a partition this runner no longer owns (the new owner replays them)."""
        for run in self.in_partition(partition):
            self.runs.pop(run.run_id, None)

    def low_watermark(self, partition: int, default: int) -> int:
        """Lowest launch offset of an unfinished run of ``partition``; ``default`` if none.

        Replaying a partition from here rebuilds every run that still needs work.
        """
        offsets = [
            r.launch_offset
            for r in self.runs.values()
            if r.partition == partition and r.launch_offset is not None
        ]
        return min([*offsets, default])

    def low_watermarks(self, defaults: dict[int, int]) -> dict[int, int]:
        """:meth:`low_watermark` of every partition in ``defaults``, in one pass over the runs."""
        out = dict(defaults)
        for r in self.runs.values():
            current = out.get(r.partition)
            if current is not None and r.launch_offset is not None and r.launch_offset < current:
                out[r.partition] = r.launch_offset
        return out
