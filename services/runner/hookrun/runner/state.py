"""Run state rebuilt from a run's events: idempotent apply, keyed by ids, no I/O."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

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
    #: The latest lease its runner announced, by that runner's clock: only compared with
    #: other leases of the same runner.
    lease_until: datetime | None = None
    #: How long that lease lasts, and when (time.monotonic() here) this process learned of it:
    #: a lease is judged by this host's own elapsed time, never by comparing two hosts' clocks.
    lease_s: float | None = None
    lease_seen: float = 0.0
    finished: ExecutionFinished | None = None

    def lease_expired(self, monotonic: float) -> bool:
        """True once the latest lease has run out by this host's monotonic clock."""
        return self.lease_s is not None and monotonic - self.lease_seen > self.lease_s

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
        applied already, changes nothing. The first of two conflicting events wins. Types the
        run does not track (see _APPLY) change nothing.
        """
        apply = _APPLY.get(type(event))
        return apply is not None and apply(self, event)

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


def _set_once(obj: Any, name: str, event: Event) -> bool:
    """Set ``obj.<name>`` to ``event`` unless it is set already: the first writer wins."""
    if getattr(obj, name) is not None:
        return False
    setattr(obj, name, event)
    return True


def _add_once(slots: dict[Any, Any], key: Any, value: Any) -> bool:
    """Store ``value`` under ``key`` unless the key is taken: the first writer wins."""
    if key in slots:
        return False
    slots[key] = value
    return True


def _record_launch(run: RunState, event: TriggerLaunched) -> bool:
    return _set_once(run, "launched", event)


def _record_start(run: RunState, event: RunStarted) -> bool:
    return _set_once(run, "started", event)


def _add_execution(run: RunState, event: ExecutionCreated) -> bool:
    return _add_once(run.executions, event.execution_id, ExecutionState(event))


def _start_execution(run: RunState, event: ExecutionStarted) -> bool:
    ex = run.executions.get(event.execution_id)
    if ex is None or ex.finished is not None:
        return False
    started = _set_once(ex, "started", event)
    return _extend_lease(ex, event) or started


def _renew_lease(run: RunState, event: ExecutionHeartbeat) -> bool:
    ex = run.executions.get(event.execution_id)
    return ex is not None and ex.finished is None and _extend_lease(ex, event)


def _extend_lease(ex: ExecutionState, event: ExecutionStarted | ExecutionHeartbeat) -> bool:
    """Keep the latest lease the execution's runner announced."""
    if ex.lease_until is not None and event.lease_until <= ex.lease_until:
        return False
    ex.lease_until = event.lease_until
    ex.lease_s = (event.lease_until - event.occurred_at).total_seconds()
    ex.lease_seen = time.monotonic()
    return True


def _finish_execution(run: RunState, event: ExecutionFinished) -> bool:
    ex = run.executions.get(event.execution_id)
    return ex is not None and _set_once(ex, "finished", event)


def _add_pipeline(run: RunState, event: PipelineCreated) -> bool:
    return _add_once(run.pipelines, event.pipeline_id, PipelineState(event))


def _skip_node(run: RunState, event: PipelineNodeSkipped) -> bool:
    pipe = run.pipelines.get(event.pipeline_id)
    return pipe is not None and _add_once(pipe.skipped, event.node, event.reason)


def _finish_pipeline(run: RunState, event: PipelineFinished) -> bool:
    pipe = run.pipelines.get(event.pipeline_id)
    return pipe is not None and _set_once(pipe, "finished", event)


def _complete_action(run: RunState, event: ActionCompleted) -> bool:
    return _add_once(run.actions, event.action_index, event)


def _request_cancel(run: RunState, event: RunCancelRequested) -> bool:
    return _set_once(run, "cancel", event)


def _record_finish(run: RunState, event: RunFinished) -> bool:
    return _set_once(run, "finished", event)


#: How each type of run event changes a run's state: one function per type, each taking an
#: event of the type it is listed under and returning whether the state changed.
_APPLY: dict[type[Event], Callable[[RunState, Any], bool]] = {
    TriggerLaunched: _record_launch,
    RunStarted: _record_start,
    ExecutionCreated: _add_execution,
    ExecutionStarted: _start_execution,
    ExecutionHeartbeat: _renew_lease,
    ExecutionFinished: _finish_execution,
    PipelineCreated: _add_pipeline,
    PipelineNodeSkipped: _skip_node,
    PipelineFinished: _finish_pipeline,
    ActionCompleted: _complete_action,
    RunCancelRequested: _request_cancel,
    RunFinished: _record_finish,
}


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
