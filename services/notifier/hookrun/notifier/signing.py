"""Standard Webhooks signing of outgoing notifications (plus Trigger.dev's X-Trigger-Signature-256)."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Sequence


def message_id(run_id: str, subscription_id: str) -> str:
    """The ``webhook-id`` of a run's delivery to one subscription: the same on every retry."""
    digest = hashlib.sha256(subscription_id.encode()).hexdigest()[:12]
    return f"msg_{run_id}_{digest}"


def signature(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """Return ``v1,<base64 HMAC-SHA256 of "id.timestamp.body">`` for one key."""
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def signed_headers(
    msg_id: str, timestamp: int, body: bytes, keys: Sequence[bytes], trigger_secret: str
) -> dict[str, str]:
    """Return the headers of one attempt.

    Every key signs (space-separated ``v1,`` entries), so receivers holding either the old or
    the new secret verify during a rotation. ``X-Trigger-Signature-256`` uses the first secret's
    text as the key, as Trigger.dev's ``verifyRequestSignature`` does.
    """
    return {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(signature(k, msg_id, timestamp, body) for k in keys),
        "x-trigger-signature-256": hmac.new(
            trigger_secret.encode(), body, hashlib.sha256
        ).hexdigest(),
    }
