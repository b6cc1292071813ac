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
    LaunchRef,
    PipelineCreated,
    PipelineDefined,
    RunStarted,
    RunStatus,
    TriggerLaunched,
)
from hookrun.runner.context import Context, SourceLoading, SourceUnavailable
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
            created.append(_create_action(run, index, action, payload, ctx))
    except SourceLoading:
        # A copy's payload input is being read from its launch; the index reconciles the run
        # again once it is there, and nothing of the run is emitted before.
        return []
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
    run: RunState, index: int, action: Any, payload: Any, ctx: Context
) -> list[Event]:
    config = ctx.config
    run_id, launched = run.run_id, run.launched
    assert launched is not None
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
        payload_inputs: dict[str, list[str]] = {}
        payload_from = None
        target, offset = action.payload_target(pipeline), run.launch_offset
        if target is not None and offset is None:
            inputs[target[0]] = {target[1]: launched.request.body_b64}  # nowhere to refer to
        elif target is not None and offset is not None:
            # The body stays in this run's launch: the definition refers to it, so no copy of
            # it reaches the compacted pipelines topic or any runner's memory.
            payload_inputs[target[0]] = [target[1]]
            payload_from = LaunchRef(run_id=run_id, partition=run.partition, offset=offset)
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
            payload_inputs=payload_inputs,
            payload_from=payload_from,
        )
        return [created, PipelineDefined.of(created)]
    assert isinstance(action, CopyPipelineAction)
    # The id may be a `{payload...}` template, so a sender can name the pipeline to copy.
    source_id = str(_template(action.source_pipeline_id, payload))
    source, problem = _copy_source(action, source_id, launched, ctx)
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
        # Inline for the copy's own run (any runner that takes it over has them at hand); its
        # definition keeps referring to the launch that holds the payload input.
        inputs_b64=dict(source.inputs_b64),
        source_pipeline_id=source.pipeline_id,
        trigger_id=launched.trigger_id,
        payload_inputs=dict(source.payload_inputs),
        payload_from=source.payload_from,
    )
    return [created, PipelineDefined.of(created)]


def _copy_source(
    action: CopyPipelineAction, source_id: str, launched: TriggerLaunched, ctx: Context
) -> tuple[PipelineDefined | None, str | None]:
    """The definition to copy with its payload input, or why it cannot be copied.

    Checked before its payload input is read: a refused source costs no read.
    """
    source = ctx.lookup_pipeline(source_id, with_payload=False)
    if source is None:
        return None, f"unknown source pipeline {source_id!r}"
    if not action.from_any_trigger and source.trigger_id != launched.trigger_id:
        return None, (
            f"source pipeline {source_id!r} was not created by trigger {launched.trigger_id!r}"
            " (from_any_trigger: true allows it)"
        )
    for step_name in source.nodes.values():
        step = ctx.config.step(step_name)
        if step is None:
            return None, f"source pipeline uses step {step_name!r}, which the config lacks"
        _check_env(step, ctx)
    try:
        return ctx.lookup_pipeline(source_id), None
    except SourceUnavailable as exc:
        return None, str(exc)
