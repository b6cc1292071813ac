"""The admin API's subscriptions: every subscription with its state and recent delivery health."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from hookrun.events.subscriptions import subscription_id
from hookrun.status.handlers import Deps
from hookrun.status.projection import ts

_TIME = {"type": "string", "format": "date-time"}
#: The JSON Schema of GET /api/v1/subscriptions' answer (in the OpenAPI document; a stable shape
#: the dashboard reads).
LIST_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["subscriptions", "window_s"],
    "properties": {
        "window_s": {"type": "integer"},
        "subscriptions": {
            "type": "array",
            "items": {
                "type": "object",
                "required": [
                    "id",
                    "trigger_id",
                    "url",
                    "source",
                    "state",
                    "disabled",
                    "recent",
                    "last_attempt",
                ],
                "properties": {
                    "id": {"type": "string"},
                    "trigger_id": {"type": "string"},
                    "url": {"type": "string"},
                    "source": {
                        "enum": ["config", "api"],
                        "description": "config-file subscriptions are read-only",
                    },
                    "state": {"enum": ["enabled", "disabled"]},
                    "disabled": {
                        "description": "why and since when, while disabled",
                        "anyOf": [
                            {"type": "null"},
                            {
                                "type": "object",
                                "required": ["cause", "reason"],
                                "properties": {
                                    "cause": {"enum": ["config", "gone", "failing"]},
                                    "reason": {"type": "string"},
                                    "at": _TIME,
                                },
                            },
                        ],
                    },
                    "recent": {
                        "type": "object",
                        "required": ["window_s", "attempts", "succeeded", "success_rate"],
                        "properties": {
                            "window_s": {"type": "integer"},
                            "attempts": {"type": "integer", "minimum": 0},
                            "succeeded": {"type": "integer", "minimum": 0},
                            "success_rate": {
                                "anyOf": [
                                    {"type": "number", "minimum": 0, "maximum": 1},
                                    {"type": "null"},
                                ],
                                "description": "null when nothing was attempted in the window",
                            },
                        },
                    },
                    "last_attempt": {
                        "anyOf": [
                            {"type": "null"},
                            {
                                "type": "object",
                                "required": ["at", "outcome", "status_code"],
                                "properties": {
                                    "at": _TIME,
                                    "outcome": {"enum": ["succeeded", "failed", "refused", "gone"]},
                                    "status_code": {"type": ["integer", "null"]},
                                },
                            },
                        ]
                    },
                },
            },
        },
    },
}

#: The window of GET /api/v1/subscriptions' ``recent`` figures unless ``window_s`` says otherwise.
RECENT_WINDOW_S = 86_400


async def list_subscriptions(deps: Deps, window_s: int = RECENT_WINDOW_S) -> dict[str, Any]:
    """Every subscription, config-file ones first in file order, each with its state, the
    attempts of the last ``window_s`` seconds and its last attempt (docs/status.md)."""
    since = ts(datetime.fromtimestamp(deps.clock() - window_s, UTC))
    stats = await deps.store.subscription_stats(since or "")
    items = []
    for trigger in deps.config.triggers:
        for notification in trigger.notifications:
            sid = subscription_id(trigger.id, notification.url)
            item: dict[str, Any] = {
                "id": sid,
                "trigger_id": trigger.id,
                "url": notification.url,
                "source": "config",
                "state": "enabled",
                "disabled": None,
            }
            disabled = deps.subscriptions.disabled_under(sid, deps.config.config_version)
            if not notification.enabled:
                item["state"] = "disabled"
                item["disabled"] = {"cause": "config", "reason": "enabled: false in the config"}
            elif disabled is not None:
                item["state"] = "disabled"
                item["disabled"] = {
                    "cause": "gone",
                    "reason": disabled.reason,
                    "at": ts(disabled.occurred_at),
                }
            items.append(item | _health(stats.get(sid), window_s))
    return {"subscriptions": items, "window_s": window_s}


def _health(stats: dict[str, Any] | None, window_s: int) -> dict[str, Any]:
    stats = stats or {"attempts": 0, "succeeded": 0}
    attempts, succeeded = stats["attempts"], stats["succeeded"]
    last = stats.get("last_attempt")
    return {
        "recent": {
            "window_s": window_s,
            "attempts": attempts,
            "succeeded": succeeded,
            # None, not 1.0 or 0.0, when nothing was attempted: no traffic is not health.
            "success_rate": round(succeeded / attempts, 4) if attempts else None,
        },
        "last_attempt": last,
    }
