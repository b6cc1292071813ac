"""The JSON Schema of the RunNotification body the notifier POSTs (docs/notifier.md, "Payload")."""

from __future__ import annotations

from typing import Any

from hookrun.events.runs import RunStatus

SCHEMA_ID = "urn:hookrun:schema:run-notification:v1"

_STATUS = {"type": "string", "enum": [s.value for s in RunStatus]}
_TIME = {"type": "string", "format": "date-time"}
_ERROR: dict[str, Any] = {
    "type": "object",
    "required": ["message"],
    "properties": {
        "message": {"type": "string"},
        "name": {"type": ["string", "null"]},
        "stackTrace": {"type": ["string", "null"]},
    },
}
_STATUS_RECORD: dict[str, Any] = {
    "type": "object",
    "required": ["key", "label", "state", "data", "history"],
    "properties": {
        "key": {"type": "string", "description": "the execution id"},
        "label": {"type": "string", "description": "the step name"},
        "state": {"type": "string", "enum": ["loading", "success", "failure"]},
        "data": {
            "type": "object",
            "required": ["exitCode", "durationInMs"],
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
                "required": ["label", "state", "data"],
                "properties": {
                    "label": {"type": "string"},
                    "state": {"type": "string", "enum": ["loading", "success", "failure"]},
                    "data": {"type": "object"},
                },
            },
        },
    },
}
_TASK: dict[str, Any] = {
    "type": "object",
    "required": ["id", "cacheKey", "error", "status", "name", "startedAt", "params"],
    "properties": {
        "id": {"type": "string"},
        "cacheKey": {"type": ["string", "null"]},
        "error": _ERROR,
        "status": _STATUS,
        "name": {"type": "string"},
        "startedAt": {"anyOf": [_TIME, {"type": "null"}]},
        "params": {"type": "object"},
    },
}

#: Draft 2020-12 schema of the RunNotification object. ``output`` is present only when ``ok``;
#: ``error`` and ``task`` only when not (Trigger.dev's success/failure union); ``account`` only
#: when a condition identified the sender.
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
                "context": {"type": "object"},
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
        "required": ["output"],
        "not": {"anyOf": [{"required": ["error"]}, {"required": ["task"]}]},
        "properties": {"status": {"const": "SUCCESS"}},
    },
    "else": {"required": ["error"], "not": {"required": ["output"]}},
}
