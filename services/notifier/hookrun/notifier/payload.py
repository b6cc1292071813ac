"""Builds Trigger.dev's RunNotification body from a RunFinished event and the config."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson

from hookrun.config import HookrunConfig
from hookrun.events.runs import ErrorDetail, ExecutionSummary, RunFinished, RunStatus


def iso(moment: datetime | None) -> str | None:
    """RFC 3339 in UTC with milliseconds and a `Z` (``2026-12-05T21:21:35.024Z``), as
    JavaScript's ``Date.toJSON`` writes the dates Trigger.dev sends."""
    if moment is None:
        return None
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.replace(tzinfo=None).isoformat(timespec="milliseconds") + "Z"


def _error(error: ErrorDetail | None, fallback: str) -> dict[str, Any]:
    """Trigger.dev's ``ErrorWithStack``: ``{message, name?, stack?}``, absent keys left out."""
    if error is None:
        return {"message": fallback}
    body: dict[str, Any] = {"message": error.message}
    if error.name:
        body["name"] = error.name
    if error.stack_trace:
        body["stack"] = error.stack_trace
    return body


#: An execution's status in Trigger.dev's task vocabulary (``TaskStatusSchema``).
_TASK_STATUS = {RunStatus.SUCCESS: "COMPLETED", RunStatus.CANCELED: "CANCELED"}


def _state(execution: ExecutionSummary) -> str:
    if execution.completed_at is None:
        return "loading"
    return "success" if execution.status is RunStatus.SUCCESS else "failure"


def _status_record(execution: ExecutionSummary) -> dict[str, Any]:
    data = {
        "exitCode": execution.exit_code,
        "durationInMs": execution.duration_ms,
        "status": execution.status.value,
    }
    history: list[dict[str, Any]] = [
        {
            "label": execution.step,
            "state": "loading",
            "data": {"startedAt": iso(execution.started_at)},
        }
    ]
    if execution.completed_at is not None:
        history.append({"label": execution.step, "state": _state(execution), "data": data})
    return {
        "key": execution.execution_id,
        "label": execution.step,
        "state": _state(execution),
        "data": data,
        "history": history,
    }


def _task(run: RunFinished) -> dict[str, Any] | None:
    failed = next(
        (e for e in run.executions if e.execution_id == run.failed_execution_id),
        next((e for e in run.executions if e.status is not RunStatus.SUCCESS), None),
    )
    if failed is None:
        return None
    return {
        "id": failed.execution_id,
        "cacheKey": None,  # hookrun executions are never cached
        "status": _task_status(failed),
        "name": failed.step,
        "icon": None,  # steps have no icon
        # Trigger.dev's task always has one; an execution that never started began with its run.
        "startedAt": iso(failed.started_at or run.started_at),
        "error": _error(failed.error or run.error, f"execution ended with {failed.status.value}"),
        "params": failed.params,
    }


def _task_status(execution: ExecutionSummary) -> str:
    if execution.completed_at is None:
        return "RUNNING"
    return _TASK_STATUS.get(execution.status, "ERRORED")


#: The config's environment, organization and project as JSON, per (frozen) config object.
_CONTEXTS: dict[int, tuple[HookrunConfig, dict[str, Any]]] = {}


def _context(config: HookrunConfig) -> dict[str, Any]:
    cached = _CONTEXTS.get(id(config))
    if cached is None or cached[0] is not config:
        if len(_CONTEXTS) > 16:
            _CONTEXTS.clear()
        parts = {
            "environment": config.environment.model_dump(mode="json"),
            "organization": config.organization.model_dump(mode="json"),
            "project": config.project.model_dump(mode="json"),
        }
        cached = _CONTEXTS[id(config)] = (config, parts)
    return cached[1]


def build_notification(run: RunFinished, config: HookrunConfig) -> dict[str, Any]:
    """Return the RunNotification object (libs/events/schemas/run-notification/v<N>.json)."""
    body: dict[str, Any] = {
        "id": run.run_id,
        "ok": run.ok,
        "status": run.status.value,
        "statuses": [_status_record(e) for e in run.executions],
        "startedAt": iso(run.started_at),
        # A finished run changes no more: its last update is its completion.
        "updatedAt": iso(run.completed_at),
        "completedAt": iso(run.completed_at),
        "isTest": run.is_test,
        "executionDurationInMs": run.duration_ms,
        "executionCount": run.execution_count,
        "invocation": {
            "id": run.invocation.id,
            "payload": run.invocation.payload,
            "timestamp": iso(run.invocation.timestamp),
            "context": run.invocation.context,
        },
        "job": {"id": run.trigger_id, "version": run.config_version},
        # shared dicts: only ever serialized, never changed
        **_context(config),
    }
    if run.ok:
        if run.output is not None:
            body["output"] = run.output
    else:
        body["error"] = _error(run.error, f"run ended with {run.status.value}")
        task = _task(run)
        if task is not None:
            body["task"] = task
    if run.account is not None:
        body["account"] = {"id": run.account, "metadata": run.account_metadata}
    return body


def notification_body(run: RunFinished, config: HookrunConfig) -> bytes:
    """The exact bytes POSTed (and signed): the same on every attempt of a delivery."""
    return orjson.dumps(build_notification(run, config))
