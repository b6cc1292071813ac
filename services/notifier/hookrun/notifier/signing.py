"""Standard Webhooks signing of outgoing notifications (plus Trigger.dev's X-Trigger-Signature-256).

``v1`` signatures are HMAC-SHA256 with a ``whsec_`` secret, ``v1a`` ed25519 with a ``whsk_``
secret key (receivers verify with its ``whpk_`` public key).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Sequence

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from hookrun.config.model.base import SigningKeys


def message_id(run_id: str, subscription_id: str) -> str:
    """The ``webhook-id`` of a run's delivery to one subscription: the same on every retry."""
    digest = hashlib.sha256(subscription_id.encode()).hexdigest()[:12]
    return f"msg_{run_id}_{digest}"


def signature(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """Return ``v1,<base64 HMAC-SHA256 of "id.timestamp.body">`` for one key."""
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def signature_v1a(key: Ed25519PrivateKey, msg_id: str, timestamp: int, body: bytes) -> str:
    """Return ``v1a,<base64 ed25519 signature of "id.timestamp.body">``."""
    return "v1a," + base64.b64encode(key.sign(f"{msg_id}.{timestamp}.".encode() + body)).decode()


def signed_headers(
    msg_id: str,
    timestamp: int,
    body: bytes,
    keys: SigningKeys,
    extra: Sequence[tuple[str, str]] = (),
) -> dict[str, str]:
    """Return the headers of one attempt: the subscription's ``extra`` ones, then those that
    sign it (which ``extra`` cannot override: the config refuses such names).

    Every key signs (space-separated ``v1,`` and ``v1a,`` entries), so receivers holding either
    the old or the new secret verify during a rotation. ``X-Trigger-Signature-256`` uses the
    first ``whsec_`` secret's text as the key, as Trigger.dev's ``verifyRequestSignature`` does.
    """
    headers = dict(extra)
    headers["content-type"] = "application/json"
    headers["webhook-id"] = msg_id
    headers["webhook-timestamp"] = str(timestamp)
    headers["webhook-signature"] = " ".join(
        [signature(k, msg_id, timestamp, body) for k in keys.hmac]
        + [signature_v1a(k, msg_id, timestamp, body) for k in keys.ed25519]
    )
    if keys.trigger_secret is not None:
        headers["x-trigger-signature-256"] = hmac.new(
            keys.trigger_secret.encode(), body, hashlib.sha256
        ).hexdigest()
    return headers
