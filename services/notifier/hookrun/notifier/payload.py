"""Builds Trigger.dev's RunNotification body from a RunFinished event and the config."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson

from hookrun.config import HookrunConfig
from hookrun.events.runs import ErrorDetail, ExecutionSummary, RunFinished, RunStatus


def iso(moment: datetime | None) -> str | None:
    """RFC 3339 in UTC with a `Z`, as Trigger.dev sends dates."""
    if moment is None:
        return None
    return moment.isoformat().replace("+00:00", "Z")


def _error(error: ErrorDetail | None, fallback: str) -> dict[str, Any]:
    if error is None:
        return {"message": fallback, "name": None, "stackTrace": None}
    return {"message": error.message, "name": error.name, "stackTrace": error.stack_trace}


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
        "error": _error(failed.error or run.error, f"execution ended with {failed.status.value}"),
        "status": failed.status.value,
        "name": failed.step,
        "startedAt": iso(failed.started_at),
        "params": failed.params,
    }


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
    """Return the RunNotification object (libs/events/schemas/run-notification.json)."""
    body: dict[str, Any] = {
        "id": run.run_id,
        "ok": run.ok,
        "status": run.status.value,
        "statuses": [_status_record(e) for e in run.executions],
        "startedAt": iso(run.started_at),
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
        body["output"] = run.output
    else:
        body["error"] = _error(run.error, f"run ended with {run.status.value}")
        task = _task(run)
        if task is not None:
            body["task"] = task
    if run.account is not None:
        body["account"] = {"id": run.account, "metadata": None}
    return body


def notification_body(run: RunFinished, config: HookrunConfig) -> bytes:
    """The exact bytes POSTed (and signed): the same on every attempt of a delivery."""
    return orjson.dumps(build_notification(run, config))
