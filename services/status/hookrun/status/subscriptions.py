"""The admin API's subscriptions: every subscription with its state and recent delivery health."""

from __future__ import annotations

import base64
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import ValidationError

from hookrun.config import Notification
from hookrun.config.model.base import SigningKeys
from hookrun.events import Event, RedeliveryRequested, new_id, tracing
from hookrun.events.notifications import (
    SubscriptionDeleted,
    SubscriptionEnabled,
    SubscriptionSaved,
    SubscriptionSecret,
)
from hookrun.events.subscriptions import subscription_id
from hookrun.status.handlers import ApiError, Deps, appended, known_run
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
                    "statuses",
                    "headers",
                    "signatures",
                    "failing_since",
                    "exhausted_in_row",
                    "recent",
                    "last_attempt",
                ],
                "properties": {
                    "statuses": {
                        "anyOf": [{"type": "array", "items": {"type": "string"}}, {"type": "null"}],
                        "description": "the run statuses delivered; null: all",
                    },
                    "headers": {
                        "type": "array",
                        "items": {"type": "string"},
                        "description": "names of the extra headers (values are never shown)",
                    },
                    "signatures": {"type": "array", "items": {"enum": ["v1", "v1a"]}},
                    "failing_since": {
                        "anyOf": [_TIME, {"type": "null"}],
                        "description": "first failed attempt since the last success",
                    },
                    "exhausted_in_row": {"type": "integer", "minimum": 0},
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


@dataclass(frozen=True)
class Listed:
    """A subscription as the admin API shows it (never with its secrets or header values)."""

    id: str
    trigger_id: str
    url: str
    source: Literal["config", "api"]
    #: False: ``enabled: false`` in the config file.
    enabled: bool
    statuses: list[str] | None
    header_names: list[str]
    signatures: list[str]


def _signatures(keys: SigningKeys) -> list[str]:
    return (["v1"] if keys.hmac else []) + (["v1a"] if keys.ed25519 else [])


def _from_config(deps: Deps) -> list[Listed]:
    return [
        Listed(
            subscription_id(trigger.id, n.url),
            trigger.id,
            n.url,
            "config",
            n.enabled,
            None if n.statuses is None else list(n.statuses),
            sorted(n.headers),
            _signatures(n.signing_keys),
        )
        for trigger in deps.config.triggers
        for n in trigger.notifications
    ]


def _from_api(saved: SubscriptionSaved) -> Listed:
    return Listed(
        saved.subscription_id,
        saved.trigger_id,
        saved.url,
        "api",
        True,
        saved.statuses,
        sorted(saved.headers),
        [saved.signature],
    )


def every_subscription(deps: Deps) -> list[Listed]:
    """Config-file subscriptions in file order, then those made through the API, oldest first."""
    made = sorted(
        deps.subscriptions.defined.values(),
        key=lambda s: (s.created_at or s.occurred_at, s.subscription_id),
    )
    return _from_config(deps) + [_from_api(saved) for saved in made]


def find(deps: Deps, sid: str) -> Listed:
    """The subscription ``sid``; 404 when there is none."""
    for listed in every_subscription(deps):
        if listed.id == sid:
            return listed
    raise ApiError(404, {"error": "subscription not found"})


def disabled(listed: Listed, deps: Deps) -> dict[str, Any] | None:
    """Why nothing is delivered to the subscription (``cause``, ``reason``, ``at``); None while
    it is enabled."""
    if not listed.enabled:
        return {"cause": "config", "reason": "enabled: false in the config file"}
    held = deps.subscriptions.disabled_under(listed.id, deps.config.config_version)
    if held is None:
        return None
    return {"cause": held.cause, "reason": held.reason, "at": ts(held.occurred_at)}


def describe(
    listed: Listed, deps: Deps, stats: dict[str, Any] | None, window_s: int
) -> dict[str, Any]:
    """The JSON of one subscription (LIST_SCHEMA's item)."""
    item: dict[str, Any] = {
        "id": listed.id,
        "trigger_id": listed.trigger_id,
        "url": listed.url,
        "source": listed.source,
        "state": "enabled",
        "disabled": None,
        "statuses": listed.statuses,
        "headers": listed.header_names,
        "signatures": listed.signatures,
    }
    held = disabled(listed, deps)
    if held is not None:
        item["state"], item["disabled"] = "disabled", held
    health = deps.subscriptions.health.get(listed.id)
    item["failing_since"] = None if health is None else ts(health.failing_since)
    item["exhausted_in_row"] = 0 if health is None else health.exhausted_in_row
    stats = stats or {"attempts": 0, "succeeded": 0}
    attempts, succeeded = stats["attempts"], stats["succeeded"]
    item["recent"] = {
        "window_s": window_s,
        "attempts": attempts,
        "succeeded": succeeded,
        # None, not 1.0 or 0.0, when nothing was attempted: no traffic is not health.
        "success_rate": round(succeeded / attempts, 4) if attempts else None,
    }
    item["last_attempt"] = stats.get("last_attempt")
    return item


async def _stats(deps: Deps, window_s: int) -> dict[str, dict[str, Any]]:
    since = ts(datetime.fromtimestamp(deps.clock() - window_s, UTC))
    return await deps.store.subscription_stats(since or "")


async def list_subscriptions(deps: Deps, window_s: int = RECENT_WINDOW_S) -> dict[str, Any]:
    """Every subscription, config-file ones first in file order, each with its state, the
    attempts of the last ``window_s`` seconds and its last attempt (docs/status.md)."""
    stats = await _stats(deps, window_s)
    return {
        "subscriptions": [
            describe(listed, deps, stats.get(listed.id), window_s)
            for listed in every_subscription(deps)
        ],
        "window_s": window_s,
    }


async def one(deps: Deps, sid: str) -> dict[str, Any]:
    """One subscription as the list shows it."""
    listed = find(deps, sid)
    stats = await _stats(deps, RECENT_WINDOW_S)
    return describe(listed, deps, stats.get(sid), RECENT_WINDOW_S)


async def enable(deps: Deps, sid: str) -> dict[str, Any]:
    """Enable a subscription the notifier disabled (410, or failing): SubscriptionEnabled,
    which also forgets its failures. One disabled in the config file is the file's to change."""
    listed = find(deps, sid)
    if not listed.enabled:
        raise ApiError(
            409,
            {
                "error": "the subscription is disabled in the config file (enabled: false); change the file"
            },
        )
    event = SubscriptionEnabled(subscription_id=sid, trigger_id=listed.trigger_id)
    await appended(deps.log.append([event]), deps)
    deps.subscriptions.apply(event)  # read your write; the topic brings it to the others
    return await one(deps, sid)


def _nothing_to_send(run: dict[str, Any], sid: str | None, deps: Deps) -> str | None:
    """Why a redelivery of ``run`` (to ``sid``, or to every subscription) would send nothing, as
    the notifier decides it; None when it would send something."""
    trigger_id, status = run["trigger_id"], run["status"]
    subs = [s for s in every_subscription(deps) if s.trigger_id == trigger_id]
    if sid is not None:
        named = next((s for s in subs if s.id == sid), None)
        if named is None:
            return f"{sid} is not a subscription of trigger {trigger_id}"
        held = disabled(named, deps)
        return None if held is None else f"subscription {sid} is disabled: {held['reason']}"
    if not subs:
        return f"trigger {trigger_id} has no subscription"
    enabled = [s for s in subs if disabled(s, deps) is None]
    if not enabled:
        return f"every subscription of trigger {trigger_id} is disabled"
    # Named ones get the run whatever their statuses; all of them only where these include it.
    if not any(s.statuses is None or status in s.statuses for s in enabled):
        return f"no enabled subscription of trigger {trigger_id} has {status} in its statuses"
    return None


def redelivery_refused(run: dict[str, Any], sid: str | None, deps: Deps) -> str | None:
    """The error a redelivery of ``run`` (to ``sid``, or to every subscription) is refused with;
    None when it would send something. The dashboard asks it to decide whether to offer one."""
    if run["status"] is None:
        # A run's notification exists only once it has finished.
        return "run has not finished; there is nothing to redeliver"
    why = _nothing_to_send(run, sid, deps)
    return None if why is None else f"nothing to redeliver: {why}"


async def redeliver(run_id: str, sid: str | None, deps: Deps) -> dict[str, Any]:
    """Append RedeliveryRequested for a finished run that would be sent to a subscription;
    409 saying why nothing would be sent otherwise."""
    run = await known_run(run_id, deps)
    refused = redelivery_refused(run, sid, deps)
    if refused is not None:
        raise ApiError(409, {"error": refused})
    again = RedeliveryRequested(
        run_id=run_id,
        subscription_id=sid,
        requested_by="admin",
        **tracing.fields(await deps.store.run_trace(run_id)),
    )
    await appended(deps.log.append([again]), deps)
    return {"run_id": run_id, "redelivery_requested": True, "subscription_id": sid}


#: How long a rotated-out secret keeps signing beside the new one.
ROTATION_OVERLAP_S = 86_400


def _new_secret(kind: str) -> tuple[str, str | None]:
    """A fresh secret of ``kind`` (v1: ``whsec_``, v1a: ``whsk_``) and, for v1a, its ``whpk_``
    public key, the one a receiver verifies with."""
    if kind == "v1a":
        key = Ed25519PrivateKey.generate()
        public = key.public_key().public_bytes_raw()
        return (
            "whsk_" + base64.b64encode(key.private_bytes_raw()).decode(),
            "whpk_" + base64.b64encode(public).decode(),
        )
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode(), None


def _checked(trigger_id: str, body: dict[str, Any], secret: str) -> Notification:
    """The definition as a config-file notification would be checked: 400 naming the field."""
    fields = {k: body[k] for k in ("url", "statuses", "headers") if k in body}
    if fields.get("headers") is None:
        fields.pop("headers", None)  # null: no extra headers
    try:
        return Notification.model_validate({**fields, "secret": secret})
    except ValidationError as exc:
        problems = [
            f"{'.'.join(str(p) for p in e['loc']) or '(body)'}: {e['msg'].removeprefix('Value error, ')}"
            for e in exc.errors()
        ]
        raise ApiError(400, {"error": "; ".join(problems)}) from None


def _only(body: dict[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise ApiError(400, {"error": f"{unknown[0]}: not a field of a subscription"})


async def _save(deps: Deps, event: Event) -> None:
    await appended(deps.log.append([event]), deps)
    deps.subscriptions.apply(event)  # read your write; the topic brings it to the others


def _made(deps: Deps, sid: str) -> SubscriptionSaved:
    """The definition of a subscription made through the API; 404 unknown, 409 config-file."""
    saved = deps.subscriptions.defined.get(sid)
    if saved is None:
        find(deps, sid)  # 404 when there is no such subscription at all
        raise ApiError(
            409,
            {
                "error": "the subscription is in the config file, which is read-only here: change the file"
            },
        )
    return saved


async def create(deps: Deps, body: dict[str, Any]) -> dict[str, Any]:
    """A subscription of a trigger, live without a restart: SubscriptionSaved on the topic.
    The answer is the only place its secret is ever shown."""
    _only(body, {"trigger_id", "url", "statuses", "headers", "signature"})
    trigger_id = body.get("trigger_id")
    if not isinstance(trigger_id, str) or trigger_id not in deps.triggers:
        raise ApiError(400, {"error": "trigger_id: no such trigger"})
    kind = body.get("signature", "v1")
    if kind not in ("v1", "v1a"):
        raise ApiError(400, {"error": "signature: must be 'v1' (whsec_) or 'v1a' (whsk_)"})
    secret, public_key = _new_secret(kind)
    checked = _checked(trigger_id, body, secret)
    sid = f"{trigger_id}:sub_{secrets.token_hex(6)}"
    saved = SubscriptionSaved(
        subscription_id=sid,
        trigger_id=trigger_id,
        url=checked.url,
        secrets=[SubscriptionSecret(secret=deps.sealer.seal(secret))],
        signature=kind,
        statuses=None if checked.statuses is None else list(checked.statuses),
        headers=dict(body.get("headers") or {}),
        created_at=datetime.fromtimestamp(deps.clock(), UTC),
    )
    await _save(deps, saved)
    shown = await one(deps, sid)
    shown["secret"] = secret
    if public_key is not None:
        shown["public_key"] = public_key
    return shown


async def change(deps: Deps, sid: str, body: dict[str, Any]) -> dict[str, Any]:
    """Change a subscription made through the API (url, statuses, headers); secrets stay."""
    _only(body, {"url", "statuses", "headers"})
    saved = _made(deps, sid)
    merged = {
        "url": saved.url,
        "statuses": saved.statuses,
        "headers": saved.headers,
        **body,
    }
    # The stored secrets may be sealed: a fresh one of the kind stands in for the checks.
    checked = _checked(saved.trigger_id, merged, _new_secret(saved.signature)[0])
    changed = SubscriptionSaved(
        subscription_id=sid,
        trigger_id=saved.trigger_id,
        url=checked.url,
        secrets=saved.secrets,
        signature=saved.signature,
        statuses=None if checked.statuses is None else list(checked.statuses),
        headers=dict(merged["headers"] or {}),
        created_at=saved.created_at,
    )
    await _save(deps, changed)
    return await one(deps, sid)


async def delete(deps: Deps, sid: str) -> None:
    """Remove a subscription made through the API: SubscriptionDeleted."""
    saved = _made(deps, sid)
    await _save(deps, SubscriptionDeleted(subscription_id=sid, trigger_id=saved.trigger_id))


async def rotate_secret(deps: Deps, sid: str) -> dict[str, Any]:
    """A new secret of the same kind; the current one keeps signing beside it for 24 hours
    (Standard Webhooks' space-separated signatures), and ones already expired are dropped."""
    saved = _made(deps, sid)
    now = deps.clock()
    secret, public_key = _new_secret(saved.signature)
    expires = datetime.fromtimestamp(now + ROTATION_OVERLAP_S, UTC)
    kept = [
        SubscriptionSecret(secret=s.secret, expires_at=s.expires_at or expires)
        for s in saved.secrets
        if s.expires_at is None or s.expires_at.timestamp() > now
    ]
    rotated = saved.model_copy(
        update={
            "secrets": [SubscriptionSecret(secret=secret), *kept],
            "event_id": new_id(),
            "occurred_at": datetime.fromtimestamp(now, UTC),
        }
    )
    await _save(deps, rotated)
    answer: dict[str, Any] = {
        "id": sid,
        "secret": secret,
        "previous_secret_expires_at": ts(expires),
    }
    if public_key is not None:
        answer["public_key"] = public_key
    return answer
