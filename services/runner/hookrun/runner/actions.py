"""Start a run: validate its payload, resolve its actions, create their executions and pipelines."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hookrun.config import (
    CopyPipelineAction,
    ParameterError,
    PayloadPathError,
    RunExecutionAction,
    RunPipelineAction,
    Step,
    UnresolvedEnvError,
    reads_payload,
    resolve_env_refs,
    resolve_parameters,
    resolve_template,
)
from hookrun.events.base import Event, new_id
from hookrun.events.runs import (
    ActionCompleted,
    ExecutionCreated,
    PipelineCreated,
    PipelineDefined,
    RunStarted,
    RunStatus,
    TriggerLaunched,
)
from hookrun.runner.context import Context
from hookrun.runner.outcomes import decided_finish
from hookrun.runner.state import RunState


class _Decided(Exception):
    """The run ends before anything runs (INVALID_PAYLOAD, UNRESOLVED_AUTH)."""

    def __init__(self, status: RunStatus, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def start_run(run: RunState, ctx: Context) -> list[Event]:
    """Decide the run before anything runs: validate, resolve, and create its objects."""
    launched = run.launched
    assert launched is not None
    trigger = ctx.config.trigger(launched.trigger_id)
    if trigger is None:
        started = _run_started(launched, ctx, 0)
        unknown = f"unknown trigger {launched.trigger_id!r}"
        return [started, decided_finish(run, started, RunStatus.FAILURE, unknown, ctx)]
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
        events.append(decided_finish(run, started, decided.status, decided.message, ctx))
        return events
    return [started, *(e for group in created for e in group)]


def _run_started(launched: TriggerLaunched, ctx: Context, count: int) -> RunStarted:
    return RunStarted(
        run_id=launched.run_id,
        trigger_id=launched.trigger_id,
        runner_id=ctx.runner_id,
        action_count=count,
    )


def _template(value: Any, payload: Any) -> Any:
    try:
        return resolve_template(value, payload)
    except PayloadPathError as exc:
        raise _Decided(RunStatus.INVALID_PAYLOAD, str(exc)) from None


def _resolve(step: Step, values: Mapping[str, Any], payload: Any, ctx: Context) -> dict[str, Any]:
    try:
        resolved = {k: resolve_template(v, payload) for k, v in values.items()}
        # A value from the payload must not become an option of the step's command.
        from_payload = {k for k, v in values.items() if reads_payload(v)}
        params = resolve_parameters(step, resolved, from_payload=from_payload)
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
            trigger_id=launched.trigger_id,
        )
        return [created, PipelineDefined.of(created)]
    assert isinstance(action, CopyPipelineAction)
    # The id may be a `{payload...}` template, so a sender can name the pipeline to copy.
    source_id = str(_template(action.source_pipeline_id, payload))
    source = ctx.lookup_pipeline(source_id)
    problem = None
    if source is None:
        problem = f"unknown source pipeline {source_id!r}"
    elif not action.from_any_trigger and source.trigger_id != launched.trigger_id:
        problem = (
            f"source pipeline {source_id!r} was not created by trigger {launched.trigger_id!r}"
            " (from_any_trigger: true allows it)"
        )
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
        trigger_id=launched.trigger_id,
    )
    return [created, PipelineDefined.of(created)]
