"""The JSON Schema of the RunNotification body the notifier POSTs (docs/notifier.md, "Payload").

It follows Trigger.dev's ``RunNotification`` type (``packages/core/src/schemas/runs.ts``) field by
field, so a body Trigger.dev itself sends validates too. Older versions stay as they were
published in ``libs/events/schemas/run-notification/v<N>.json``.
"""

from __future__ import annotations

from typing import Any

from hookrun.events.runs import RunStatus

#: The newest version; a change that a receiver validating against the old one would notice
#: bumps it (DESIGN.md section 6).
VERSION = 2
SCHEMA_ID = f"urn:hookrun:schema:run-notification:v{VERSION}"

#: Trigger.dev's task vocabulary (``TaskStatusSchema``), which ``task.status`` uses.
TASK_STATUSES = ("PENDING", "WAITING", "RUNNING", "COMPLETED", "ERRORED", "CANCELED")

_STATUS = {"type": "string", "enum": [s.value for s in RunStatus]}
#: RFC 3339 in UTC with milliseconds, as JavaScript's ``Date.toJSON`` writes it.
_TIME = {
    "type": "string",
    "format": "date-time",
    "pattern": r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$",
}
#: Trigger.dev's ``ErrorWithStack``: absent keys are left out, never null.
_ERROR: dict[str, Any] = {
    "type": "object",
    "required": ["message"],
    "properties": {
        "message": {"type": "string"},
        "name": {"type": "string"},
        "stack": {"type": "string"},
        "output": {"description": "Trigger.dev's ErrorWithStack may carry one; hookrun sends none"},
    },
}
_STATE = {"type": "string", "enum": ["loading", "success", "failure"]}
#: Trigger.dev's ``JobRunStatusRecord``: ``label`` and ``key`` required, the rest optional.
_STATUS_RECORD: dict[str, Any] = {
    "type": "object",
    "required": ["key", "label", "history"],
    "properties": {
        "key": {"type": "string", "description": "the execution id"},
        "label": {"type": "string", "description": "the step name"},
        "state": _STATE,
        "data": {
            "type": "object",
            "description": "hookrun sends exitCode, durationInMs and status",
            "properties": {
                "exitCode": {"type": ["integer", "null"]},
                "durationInMs": {"type": ["integer", "null"]},
                "status": _STATUS,
            },
        },
        "history": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "label": {"type": "string"},
                    "state": _STATE,
                    "data": {"type": "object"},
                },
            },
        },
    },
}
_TASK: dict[str, Any] = {
    "type": "object",
    "required": ["id", "cacheKey", "status", "name", "icon", "startedAt", "error", "params"],
    "properties": {
        "id": {"type": "string", "description": "the failed execution's id"},
        "cacheKey": {"type": ["string", "null"]},
        "status": {"type": "string", "enum": list(TASK_STATUSES)},
        "name": {"type": "string", "description": "the step name"},
        "icon": {"type": ["string", "null"]},
        "startedAt": _TIME,
        "error": _ERROR,
        "params": {"description": "the execution's parameters (any JSON, or null)"},
    },
    "additionalProperties": False,
}

#: Draft 2020-12 schema of the RunNotification object. ``output`` only when ``ok`` (and left
#: out when the run has none); ``error`` and ``task`` only when not (Trigger.dev's
#: success/failure union); ``account`` only when a condition identified the sender.
RUN_NOTIFICATION_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": SCHEMA_ID,
    "title": "RunNotification",
    "description": "Body of the completion webhook POSTed to every subscription of a trigger.",
    "type": "object",
    "required": [
        "id",
        "ok",
        "status",
        "statuses",
        "startedAt",
        "updatedAt",
        "completedAt",
        "isTest",
        "executionDurationInMs",
        "executionCount",
        "invocation",
        "job",
        "environment",
        "organization",
        "project",
    ],
    "properties": {
        "id": {"type": "string", "description": "the run id"},
        "ok": {"type": "boolean"},
        "status": _STATUS,
        "statuses": {"type": "array", "items": _STATUS_RECORD},
        "output": {"description": "on success: outputs of the executions, by execution id"},
        "error": _ERROR,
        "startedAt": _TIME,
        "updatedAt": _TIME,
        "completedAt": _TIME,
        "isTest": {"type": "boolean"},
        "executionDurationInMs": {"type": "integer", "minimum": 0},
        "executionCount": {"type": "integer", "minimum": 0},
        "invocation": {
            "type": "object",
            "required": ["id", "payload", "timestamp", "context"],
            "properties": {
                "id": {"type": "string"},
                "payload": {},
                "timestamp": _TIME,
                "context": {},
            },
        },
        "job": {
            "type": "object",
            "required": ["id", "version"],
            "properties": {
                "id": {"type": "string", "description": "the trigger id"},
                "version": {"type": "string", "description": "the config version"},
            },
        },
        "task": _TASK,
        "environment": {
            "type": "object",
            "required": ["id", "slug", "type"],
            "properties": {
                "id": {"type": "string"},
                "slug": {"type": "string"},
                "type": {"enum": ["PRODUCTION", "STAGING", "DEVELOPMENT", "PREVIEW"]},
            },
        },
        "organization": {
            "type": "object",
            "required": ["id", "slug", "title"],
            "properties": {
                "id": {"type": "string"},
                "slug": {"type": "string"},
                "title": {"type": "string"},
            },
        },
        "project": {
            "type": "object",
            "required": ["id", "slug", "name"],
            "properties": {
                "id": {"type": "string"},
                "slug": {"type": "string"},
                "name": {"type": "string"},
            },
        },
        "account": {
            "type": "object",
            "required": ["id"],
            "properties": {"id": {"type": "string"}, "metadata": {}},
        },
    },
    "additionalProperties": False,
    "if": {"properties": {"ok": {"const": True}}},
    "then": {
        "not": {"anyOf": [{"required": ["error"]}, {"required": ["task"]}]},
        "properties": {"status": {"const": "SUCCESS"}},
    },
    "else": {
        "required": ["error"],
        "not": {"required": ["output"]},
        "properties": {"status": {"not": {"const": "SUCCESS"}}},
    },
}
