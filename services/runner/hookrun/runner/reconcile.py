"""Reconcile a run: from its state, the events that move it on and executions to start or stop."""

from __future__ import annotations

from typing import Any

from hookrun.config import CopyPipelineAction, HookrunConfig
from hookrun.events.base import Event, new_id
from hookrun.events.runs import (
    ActionCompleted,
    ActionType,
    ExecutionCreated,
    ExecutionFinished,
    PipelineFinished,
    PipelineNodeSkipped,
    RunStatus,
)
from hookrun.runner.actions import start_run
from hookrun.runner.context import Context, Plan
from hookrun.runner.outcomes import elapsed_ms, finish_run
from hookrun.runner.state import ExecutionState, PipelineState, RunState


def needs_pipeline_lookup(run: RunState, config: HookrunConfig) -> bool:
    """True if reconciling will look up a copy_pipeline source (so the index must catch up)."""
    if run.launched is None or run.started is not None or run.finished is not None:
        return False
    trigger = config.trigger(run.launched.trigger_id)
    return trigger is not None and any(isinstance(a, CopyPipelineAction) for a in trigger.actions)


def reconcile(run: RunState, ctx: Context) -> Plan:
    """Return what moves ``run`` on, applying each emitted event to ``run`` at once.

    Applying right away means a second reconcile (or the echo of these events from Kafka)
    finds nothing left to do, so the same step is never emitted twice.
    """
    plan = Plan()
    if run.launched is None or run.finished is not None:
        return plan
    while run.finished is None:
        events = _step(run, ctx, plan)
        changed = [run.apply(event) for event in events]
        plan.events.extend(events)
        if not any(changed):
            break
    if run.finished is None and run.cancel is None:
        plan.start = [
            ex
            for ex in run.unfinished_executions()
            if ex.started is None and ctx.phase(ex.id) is None
        ]
    return plan


def _step(run: RunState, ctx: Context, plan: Plan) -> list[Event]:
    if run.started is None:
        return start_run(run, ctx)
    events: list[Event] = []
    events += _stop_or_reclaim(run, ctx, plan)
    if events:
        return events
    for pipe in run.pipelines.values():
        if pipe.finished is None:
            events += _advance_pipeline(run, pipe)
    if events:
        return events
    events += _complete_actions(run, ctx)
    if events:
        return events
    if run.started is not None and len(run.actions) >= run.started.action_count:
        return [finish_run(run, ctx)]
    return []


def _stop_or_reclaim(run: RunState, ctx: Context, plan: Plan) -> list[Event]:
    """Cancel what a cancel request stops; abort (and maybe retry) executions of dead runners."""
    events: list[Event] = []
    for ex in list(run.unfinished_executions()):
        phase = ctx.phase(ex.id)
        if phase is not None:
            if run.cancel is not None and ex.id not in plan.cancel:
                plan.cancel.append(ex.id)
            continue
        if ex.started is None:
            if run.cancel is not None:
                events.append(
                    _finished(ex, RunStatus.CANCELED, ctx, "run canceled before it started")
                )
            continue
        if not ex.lease_expired(ctx.monotonic()):
            continue
        # Its runner stopped heartbeating: the process died with it (PDEATHSIG) or is gone.
        events.append(_finished(ex, RunStatus.ABORTED, ctx, "runner lost"))
        step = ctx.config.step(ex.created.step)
        retries = step.retries if step is not None else 0
        if run.cancel is None and ex.created.attempt <= retries:
            c = ex.created
            events.append(
                ExecutionCreated(
                    run_id=run.run_id,
                    execution_id=new_id(),
                    action_index=c.action_index,
                    step=c.step,
                    params=c.params,
                    pipeline_id=c.pipeline_id,
                    node=c.node,
                    attempt=c.attempt + 1,
                )
            )
    return events


def _finished(ex: ExecutionState, status: RunStatus, ctx: Context, error: str) -> ExecutionFinished:
    started_at = ex.started.occurred_at if ex.started is not None else None
    return ExecutionFinished(
        run_id=ex.created.run_id,
        execution_id=ex.id,
        status=status,
        started_at=started_at,
        completed_at=ctx.now,
        duration_ms=elapsed_ms(started_at, ctx.now) if started_at is not None else None,
        error=error,
    )


def topological(nodes: list[str], edges: list[tuple[str, str]]) -> list[str]:
    """Node names so that every edge points forward; ties keep the given order."""
    indegree = dict.fromkeys(nodes, 0)
    for _, child in edges:
        indegree[child] = indegree.get(child, 0) + 1
    ready = [n for n in nodes if indegree[n] == 0]
    order: list[str] = []
    while ready:
        current = ready.pop(0)
        order.append(current)
        for parent, child in edges:
            if parent == current:
                indegree[child] -= 1
                if indegree[child] == 0:
                    ready.append(child)
    return order


def _node_states(
    run: RunState, pipe: PipelineState
) -> dict[str, tuple[str, ExecutionState | None]]:
    pid = pipe.created.pipeline_id
    latest = {
        node: ex for (_, p, node), ex in run.latest().items() if p == pid and node is not None
    }
    out: dict[str, tuple[str, ExecutionState | None]] = {}
    for node in pipe.created.nodes:
        ex = latest.get(node)
        if node in pipe.skipped:
            out[node] = ("skipped", None)
        elif ex is None:
            out[node] = ("pending", None)
        elif ex.finished is None:
            out[node] = ("running", ex)
        elif ex.finished.status is RunStatus.SUCCESS:
            out[node] = ("ok", ex)
        else:
            out[node] = ("failed", ex)
    return out


def _advance_pipeline(run: RunState, pipe: PipelineState) -> list[Event]:
    """Start nodes whose parents succeeded, skip those below a failure, finish when all are done."""
    created = pipe.created
    states = _node_states(run, pipe)
    order = topological(list(created.nodes), [tuple(e) for e in created.edges])  # type: ignore[misc]
    events: list[Event] = []
    for node in order:
        state, _ = states[node]
        if state != "pending":
            continue
        parents = [p for p, c in created.edges if c == node]
        bad = [p for p in parents if states[p][0] in ("failed", "skipped")]
        if run.cancel is not None:
            reason = "run canceled"
        elif bad:
            reason = f"upstream node {bad[0]!r} did not succeed"
        elif all(states[p][0] == "ok" for p in parents):
            events.append(
                ExecutionCreated(
                    run_id=run.run_id,
                    execution_id=new_id(),
                    action_index=created.action_index,
                    step=created.nodes[node],
                    params=created.parameters.get(node, {}),
                    pipeline_id=created.pipeline_id,
                    node=node,
                )
            )
            continue
        else:
            continue
        events.append(
            PipelineNodeSkipped(
                run_id=run.run_id, pipeline_id=created.pipeline_id, node=node, reason=reason
            )
        )
    if events:
        return events
    if all(s in ("ok", "failed", "skipped") for s, _ in states.values()):
        status = RunStatus.SUCCESS
        if any(s != "ok" for s, _ in states.values()):
            status = RunStatus.CANCELED if run.cancel is not None else RunStatus.FAILURE
            for node in order:
                s, ex = states[node]
                if s == "failed" and ex is not None and ex.finished is not None:
                    status = ex.finished.status if run.cancel is None else RunStatus.CANCELED
                    break
        return [PipelineFinished(run_id=run.run_id, pipeline_id=created.pipeline_id, status=status)]
    return []


def _complete_actions(run: RunState, ctx: Context) -> list[Event]:
    events: list[Event] = []
    latest = run.latest()
    for pipe in run.pipelines.values():
        c = pipe.created
        if pipe.finished is not None and c.action_index not in run.actions:
            kind: ActionType = "copy_pipeline" if c.source_pipeline_id else "run_pipeline"
            result: dict[str, Any] = (
                {
                    "action": kind,
                    "source_pipeline_id": c.source_pipeline_id,
                    "pipeline_id": c.pipeline_id,
                }
                if kind == "copy_pipeline"
                else {
                    "action": kind,
                    "pipeline_name": c.pipeline_name,
                    "pipeline_id": c.pipeline_id,
                }
            )
            events.append(
                ActionCompleted(
                    run_id=run.run_id,
                    action_index=c.action_index,
                    action=kind,
                    status=pipe.finished.status,
                    result=result,
                )
            )
    for (index, pipeline_id, _), ex in latest.items():
        if pipeline_id is not None or index in run.actions or ex.finished is None:
            continue
        events.append(
            ActionCompleted(
                run_id=run.run_id,
                action_index=index,
                action="run_execution",
                status=ex.finished.status,
                result={
                    "action": "run_execution",
                    "execution_step": ex.created.step,
                    "execution_id": ex.id,
                },
                error=ex.finished.error,
            )
        )
    return events
