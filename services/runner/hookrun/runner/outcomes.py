"""A run's RunFinished: the status rule, the executions' summaries, the forced FAILURE."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from hookrun.events.runs import (
    ErrorDetail,
    ExecutionSummary,
    Invocation,
    RunFinished,
    RunStarted,
    RunStatus,
    TriggerLaunched,
)
from hookrun.runner.context import Context
from hookrun.runner.state import ExecutionState, RunState


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
    return _run_finished(
        run,
        status,
        started.occurred_at,
        ctx.now,
        execution_count=len(run.executions),
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
    return _run_finished(
        run,
        RunStatus.FAILURE,
        started_at,
        now,
        with_payload=False,
        execution_count=len(run.executions),
        error=error,
        executions=[s.model_copy(update={"output": None, "params": {}}) for s in summaries],
    )


def decided_finish(
    run: RunState, started: RunStarted, status: RunStatus, message: str, ctx: Context
) -> RunFinished:
    """The RunFinished of a run decided before anything ran (see actions.start_run)."""
    error = ErrorDetail(message=message, name=status.value)
    return _run_finished(run, status, started.occurred_at, ctx.now, execution_count=0, error=error)


def _run_finished(
    run: RunState,
    status: RunStatus,
    started_at: datetime,
    now: datetime,
    *,
    with_payload: bool = True,
    **details: Any,
) -> RunFinished:
    """The fields every RunFinished of ``run`` has; ``details`` are the rest."""
    launched = run.launched
    assert launched is not None
    return RunFinished(
        run_id=run.run_id,
        trigger_id=launched.trigger_id,
        config_version=launched.config_version,
        status=status,
        started_at=started_at,
        completed_at=now,
        duration_ms=elapsed_ms(started_at, now),
        invocation=_invocation(launched, with_payload=with_payload),
        is_test=launched.is_test,
        account=launched.account,
        account_metadata=launched.account_metadata,
        **details,
    )


def _invocation(launched: TriggerLaunched, *, with_payload: bool = True) -> Invocation:
    request = launched.request
    payload = request.payload() if with_payload else None
    if payload is None and request.body_b64 and with_payload:
        payload = request.body().decode("utf-8", "replace")
    context: dict[str, Any] = {
        "trigger_id": launched.trigger_id,
        "delivery_id": launched.delivery_id,
        "content_type": request.content_type,
        "method": request.method,
        "path": request.path,
    }
    if launched.schedule is not None:
        context["schedule"] = launched.schedule.model_dump(mode="json")
    if launched.replay_of is not None:
        context["replay_of"] = launched.replay_of
    return Invocation(
        id=launched.event_id, payload=payload, timestamp=launched.occurred_at, context=context
    )


def elapsed_ms(start: datetime, end: datetime) -> int:
    """Whole milliseconds from ``start`` to ``end``, never negative."""
    return max(0, int((end - start) / timedelta(milliseconds=1)))
