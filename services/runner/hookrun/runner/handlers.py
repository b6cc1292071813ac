"""Reconcile a run: from its state, the events that move it on and the executions to start or stop."""

from __future__ import annotations

import base64
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from hookrun.config import (
    CopyPipelineAction,
    HookrunConfig,
    ParameterError,
    PayloadPathError,
    RunExecutionAction,
    RunPipelineAction,
    Step,
    UnresolvedEnvError,
    render_command,
    resolve_env_refs,
    resolve_parameters,
    resolve_template,
)
from hookrun.events import topics
from hookrun.events.base import Event, new_id
from hookrun.events.maps import EventMap
from hookrun.events.notifications import DeliveryAttempted, DeliveryExhausted, RedeliveryRequested
from hookrun.events.runs import (
    ActionCompleted,
    ErrorDetail,
    ExecutionCreated,
    ExecutionFinished,
    ExecutionHeartbeat,
    ExecutionStarted,
    ExecutionSummary,
    Invocation,
    PipelineCreated,
    PipelineDefined,
    PipelineFinished,
    PipelineNodeSkipped,
    RunCancelRequested,
    RunFinished,
    RunStarted,
    RunStatus,
    TriggerLaunched,
)
from hookrun.runner.state import ExecutionState, PipelineState, RunState

#: Whether this process holds an execution: waiting for a slot, or its process is running.
Phase = Literal["queued", "running"] | None

#: Variables of the runner's own environment an execution inherits; the rest (Kafka settings,
#: tokens) stays out, and a step gets further values only through its `env`.
INHERITED_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "USER")


@dataclass
class Context:
    """What reconciling needs besides the run: config, clock, identity and lookups."""

    config: HookrunConfig
    runner_id: str
    now: datetime
    environ: Mapping[str, str]
    #: Phase of an execution in this process (None: not here).
    phase: Callable[[str], Phase] = lambda _id: None
    #: A pipeline definition by id (copy_pipeline), or None if unknown.
    lookup_pipeline: Callable[[str], PipelineDefined | None] = lambda _id: None


@dataclass
class Plan:
    """The result of reconciling: events to append, then executions to start and to stop."""

    events: list[Event] = field(default_factory=list)
    start: list[ExecutionState] = field(default_factory=list)
    cancel: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ExecutionSpec:
    """Everything the executor needs to run one execution as a process."""

    run_id: str
    execution_id: str
    trigger_id: str
    step: str
    argv: list[str]
    env: dict[str, str]
    params: dict[str, Any]
    #: Input name -> content given at creation (the payload input).
    inputs: dict[str, bytes]
    #: Output directories of the pipeline parents: their files become inputs.
    input_dirs: list[Path]
    timeout_s: float
    partition: int


class _Decided(Exception):
    """The run ends before anything runs (INVALID_PAYLOAD, UNRESOLVED_AUTH)."""

    def __init__(self, status: RunStatus, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


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


def start_run(run: RunState, ctx: Context) -> list[Event]:
    """Decide the run before anything runs: validate, resolve, and create its objects."""
    launched = run.launched
    assert launched is not None
    trigger = ctx.config.trigger(launched.trigger_id)
    if trigger is None:
        started = _run_started(launched, ctx, 0)
        return [
            started,
            _decided_finish(
                run,
                launched,
                started,
                RunStatus.FAILURE,
                f"unknown trigger {launched.trigger_id!r}",
                ctx,
            ),
        ]
    started = _run_started(launched, ctx, len(trigger.actions))
    payload = launched.request.payload()
    created: list[list[Event]] = []
    try:
        validator = trigger.payload_validator
        if validator is not None:
            error = next(iter(validator.iter_errors(payload)), None)
            if error is not None:
                where = "/".join(str(p) for p in error.absolute_path) or "(root)"
                raise _Decided(RunStatus.INVALID_PAYLOAD, f"payload {where}: {error.message}")
        for index, action in enumerate(trigger.actions):
            created.append(_create_action(run.run_id, index, action, launched, payload, ctx))
    except _Decided as decided:
        events: list[Event] = [started]
        for index, action in enumerate(trigger.actions):
            events.append(
                ActionCompleted(
                    run_id=run.run_id,
                    action_index=index,
                    action=action.action,
                    status=decided.status,
                    error=decided.message,
                )
            )
        events.append(_decided_finish(run, launched, started, decided.status, decided.message, ctx))
        return events
    return [started, *(e for group in created for e in group)]


def _run_started(launched: TriggerLaunched, ctx: Context, count: int) -> RunStarted:
    return RunStarted(
        run_id=launched.run_id,
        trigger_id=launched.trigger_id,
        runner_id=ctx.runner_id,
        action_count=count,
    )


def _decided_finish(
    run: RunState,
    launched: TriggerLaunched,
    started: RunStarted,
    status: RunStatus,
    message: str,
    ctx: Context,
) -> RunFinished:
    return RunFinished(
        run_id=run.run_id,
        trigger_id=launched.trigger_id,
        config_version=launched.config_version,
        status=status,
        started_at=started.occurred_at,
        completed_at=ctx.now,
        duration_ms=_ms(started.occurred_at, ctx.now),
        execution_count=0,
        invocation=_invocation(launched),
        is_test=launched.is_test,
        account=launched.account,
        error=ErrorDetail(message=message, name=status.value),
    )


def _template(value: Any, payload: Any) -> Any:
    try:
        return resolve_template(value, payload)
    except PayloadPathError as exc:
        raise _Decided(RunStatus.INVALID_PAYLOAD, str(exc)) from None


def _resolve(step: Step, values: Mapping[str, Any], payload: Any, ctx: Context) -> dict[str, Any]:
    try:
        resolved = {k: resolve_template(v, payload) for k, v in values.items()}
        params = resolve_parameters(step, resolved)
    except (PayloadPathError, ParameterError) as exc:
        raise _Decided(RunStatus.INVALID_PAYLOAD, str(exc)) from None
    _check_env(step, ctx)
    return params


def _check_env(step: Step, ctx: Context) -> dict[str, str]:
    try:
        return {k: resolve_env_refs(v, ctx.environ) for k, v in step.env.items()}
    except UnresolvedEnvError as exc:
        raise _Decided(
            RunStatus.UNRESOLVED_AUTH, f"step {step.name!r}: env {exc.name} is not set"
        ) from None


def _create_action(
    run_id: str,
    index: int,
    action: Any,
    launched: TriggerLaunched,
    payload: Any,
    ctx: Context,
) -> list[Event]:
    config = ctx.config
    body_b64 = launched.request.body_b64
    if isinstance(action, RunExecutionAction):
        step = config.step(action.step)
        assert step is not None  # the loaded config checked references
        params = _resolve(step, action.parameters, payload, ctx)
        return [
            ExecutionCreated(
                run_id=run_id,
                execution_id=new_id(),
                action_index=index,
                step=step.name,
                params=params,
            )
        ]
    if isinstance(action, RunPipelineAction):
        pipeline = config.pipeline(action.pipeline)
        assert pipeline is not None
        parameters: dict[str, dict[str, Any]] = {}
        for node in pipeline.nodes:
            step = config.step(node.step)
            assert step is not None
            values = {**node.parameters, **action.parameters.get(node.name, {})}
            parameters[node.name] = _resolve(step, values, payload, ctx)
        inputs: dict[str, dict[str, str]] = {}
        target = action.payload_target(pipeline)
        if target is not None:
            inputs[target[0]] = {target[1]: body_b64}
        created = PipelineCreated(
            run_id=run_id,
            pipeline_id=new_id(),
            pipeline_name=pipeline.name,
            action_index=index,
            nodes={n.name: n.step for n in pipeline.nodes},
            edges=[(e.from_, e.to) for e in pipeline.edges],
            parameters=parameters,
            inputs_b64=inputs,
        )
        return [created, PipelineDefined.of(created)]
    assert isinstance(action, CopyPipelineAction)
    # The id may be a `{payload...}` template, so a sender can name the pipeline to copy.
    source_id = str(_template(action.source_pipeline_id, payload))
    source = ctx.lookup_pipeline(source_id)
    problem = None
    if source is None:
        problem = f"unknown source pipeline {source_id!r}"
    else:
        for step_name in source.nodes.values():
            step = config.step(step_name)
            if step is None:
                problem = f"source pipeline uses step {step_name!r}, which the config lacks"
                break
            _check_env(step, ctx)
    if problem is not None or source is None:
        return [
            ActionCompleted(
                run_id=run_id,
                action_index=index,
                action="copy_pipeline",
                status=RunStatus.FAILURE,
                result={
                    "action": "copy_pipeline",
                    "source_pipeline_id": source_id,
                    "pipeline_id": None,
                },
                error=problem,
            )
        ]
    created = PipelineCreated(
        run_id=run_id,
        pipeline_id=new_id(),
        pipeline_name=source.pipeline_name,
        action_index=index,
        nodes=dict(source.nodes),
        edges=list(source.edges),
        parameters=dict(source.parameters),
        inputs_b64=dict(source.inputs_b64),
        source_pipeline_id=source.pipeline_id,
    )
    return [created, PipelineDefined.of(created)]


def _lease_expired(ex: ExecutionState, ctx: Context) -> bool:
    return ex.lease_until is not None and ex.lease_until < ctx.now


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
        if not _lease_expired(ex, ctx):
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
        duration_ms=_ms(started_at, ctx.now) if started_at is not None else None,
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
            kind = "copy_pipeline" if c.source_pipeline_id else "run_pipeline"
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


def finish_run(run: RunState, ctx: Context) -> RunFinished:
    """The run's outcome once every action completed (see docs/runner.md for the status rule)."""
    launched, started = run.launched, run.started
    assert launched is not None and started is not None
    final = {ex.id for ex in run.latest().values()}
    summaries = [_summary(ex) for ex in run.executions.values()]
    failed = next(
        (
            ex
            for ex in run.executions.values()
            if ex.id in final
            and ex.finished is not None
            and ex.finished.status is not RunStatus.SUCCESS
        ),
        None,
    )
    actions = [run.actions[i] for i in sorted(run.actions)]
    if all(a.status is RunStatus.SUCCESS for a in actions):
        status = RunStatus.SUCCESS
    elif run.cancel is not None:
        status = RunStatus.CANCELED
    elif failed is not None and failed.finished is not None:
        status = failed.finished.status
    else:
        status = next(a.status for a in actions if a.status is not RunStatus.SUCCESS)
    error = None
    if status is not RunStatus.SUCCESS:
        if failed is not None and failed.finished is not None:
            error = _error(failed)
        else:
            bad = next((a for a in actions if a.status is not RunStatus.SUCCESS), None)
            message = (bad.error if bad is not None else None) or status.value
            error = ErrorDetail(message=message, name=status.value)
    outputs = {
        ex.id: ex.finished.output
        for ex in run.executions.values()
        if ex.finished is not None
        and ex.finished.status is RunStatus.SUCCESS
        and ex.finished.output is not None
    }
    return RunFinished(
        run_id=run.run_id,
        trigger_id=launched.trigger_id,
        config_version=launched.config_version,
        status=status,
        started_at=started.occurred_at,
        completed_at=ctx.now,
        duration_ms=_ms(started.occurred_at, ctx.now),
        execution_count=len(run.executions),
        invocation=_invocation(launched),
        is_test=launched.is_test,
        account=launched.account,
        output=outputs or None,
        error=error,
        executions=summaries,
        failed_execution_id=failed.id if failed is not None else None,
    )


def _error(ex: ExecutionState) -> ErrorDetail | None:
    f = ex.finished
    if f is None or f.status is RunStatus.SUCCESS:
        return None
    message = f.error or (f"exit code {f.exit_code}" if f.exit_code is not None else f.status.value)
    return ErrorDetail(message=message, name=f.status.value, stack_trace=f.stderr_tail or None)


def _summary(ex: ExecutionState) -> ExecutionSummary:
    f, c = ex.finished, ex.created
    return ExecutionSummary(
        execution_id=ex.id,
        step=c.step,
        status=f.status if f is not None else RunStatus.ABORTED,
        action_index=c.action_index,
        node=c.node,
        pipeline_id=c.pipeline_id,
        exit_code=f.exit_code if f is not None else None,
        started_at=f.started_at if f is not None else None,
        completed_at=f.completed_at if f is not None else None,
        duration_ms=f.duration_ms if f is not None else None,
        params=c.params,
        output=f.output if f is not None else None,
        error=_error(ex),
    )


def forced_finish(
    run: RunState, error: ErrorDetail, now: datetime, outcome: RunFinished | None = None
) -> RunFinished:
    """A FAILURE RunFinished for a run that cannot go on: one of its events cannot be recorded,
    or reconciling it raised.

    It leaves out the payload, outputs and parameters (what can make an event too large or too
    deep to record) and keeps the executions' statuses, from ``outcome`` when the run's own
    RunFinished is the event that cannot be recorded.
    """
    launched = run.launched
    assert launched is not None
    started_at = run.started.occurred_at if run.started is not None else launched.occurred_at
    summaries = (
        outcome.executions if outcome is not None else map(_summary, run.executions.values())
    )
    return RunFinished(
        run_id=run.run_id,
        trigger_id=launched.trigger_id,
        config_version=launched.config_version,
        status=RunStatus.FAILURE,
        started_at=started_at,
        completed_at=now,
        duration_ms=_ms(started_at, now),
        execution_count=len(run.executions),
        invocation=_invocation(launched, with_payload=False),
        is_test=launched.is_test,
        account=launched.account,
        error=error,
        executions=[s.model_copy(update={"output": None, "params": {}}) for s in summaries],
    )


def _invocation(launched: TriggerLaunched, *, with_payload: bool = True) -> Invocation:
    request = launched.request
    payload = request.payload() if with_payload else None
    if payload is None and request.body_b64 and with_payload:
        payload = request.body().decode("utf-8", "replace")
    return Invocation(
        id=launched.event_id,
        payload=payload,
        timestamp=launched.occurred_at,
        context={
            "trigger_id": launched.trigger_id,
            "delivery_id": launched.delivery_id,
            "content_type": request.content_type,
            "method": request.method,
            "path": request.path,
        },
    )


def _ms(start: datetime, end: datetime) -> int:
    return max(0, int((end - start) / timedelta(milliseconds=1)))


def execution_spec(
    run: RunState, ex: ExecutionState, ctx: Context, data_dir: Path
) -> ExecutionSpec | str:
    """Build the process spec of ``ex``; a string says why it cannot run (FAILURE)."""
    launched = run.launched
    assert launched is not None
    step = ctx.config.step(ex.created.step)
    if step is None:
        return f"step {ex.created.step!r} is not in the config"
    try:
        argv = render_command(step, ex.created.params, ctx.config.config_dir)
        step_env = {k: resolve_env_refs(v, ctx.environ) for k, v in step.env.items()}
    except (ParameterError, UnresolvedEnvError) as exc:
        return str(exc)
    inputs: dict[str, bytes] = {}
    input_dirs: list[Path] = []
    c = ex.created
    if c.pipeline_id is None:
        trigger = ctx.config.trigger(launched.trigger_id)
        action = trigger.actions[c.action_index] if trigger is not None else None
        if isinstance(action, RunExecutionAction) and action.payload_input is not None:
            inputs[action.payload_input] = launched.request.body()
    else:
        pipe = run.pipelines.get(c.pipeline_id)
        if pipe is not None and c.node is not None:
            for name, b64 in pipe.created.inputs_b64.get(c.node, {}).items():
                inputs[name] = base64.b64decode(b64)
            latest = run.latest()
            for parent, child in pipe.created.edges:
                if child == c.node:
                    parent_ex = latest.get((c.action_index, c.pipeline_id, parent))
                    if parent_ex is not None:
                        input_dirs.append(data_dir / "executions" / parent_ex.id / "outputs")
    env = {k: ctx.environ[k] for k in INHERITED_ENV if k in ctx.environ}
    env.update(step_env)
    return ExecutionSpec(
        run_id=run.run_id,
        execution_id=ex.id,
        trigger_id=launched.trigger_id,
        step=step.name,
        argv=argv,
        env=env,
        params=dict(c.params),
        inputs=inputs,
        input_dirs=input_dirs,
        timeout_s=step.timeout_s,
        partition=run.partition,
    )


#: Which handlers react to which event. Every run event may move its run on, so it reconciles
#: the run; a heartbeat only extends a lease, which the lease sweeper looks at.
HANDLERS: dict[type[Event], list[Callable[[RunState, Context], Plan]]] = {
    TriggerLaunched: [reconcile],
    RunStarted: [reconcile],
    ExecutionCreated: [reconcile],
    ExecutionStarted: [reconcile],
    ExecutionHeartbeat: [],
    ExecutionFinished: [reconcile],
    PipelineCreated: [reconcile],
    PipelineNodeSkipped: [reconcile],
    PipelineFinished: [reconcile],
    RunCancelRequested: [reconcile],
    ActionCompleted: [reconcile],
    RunFinished: [],
}

#: PipelineDefined feeds the pipeline index that copy_pipeline looks sources up in; deliveries
#: are the notifier's business.
EVENTS = EventMap(
    "runner",
    frozenset({topics.RUNS, topics.PIPELINES}),
    {**HANDLERS, PipelineDefined: "PipelineIndex.remember"},
    frozenset({DeliveryAttempted, DeliveryExhausted, RedeliveryRequested}),
)
