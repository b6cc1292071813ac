"""Signing a request the way a trigger's conditions check it: the sender's side of conditions.py.

One signer per condition type (``SIGNERS``), so that ``hookrun send`` can launch any trigger and
a test fails when a condition type has none. A signer adds headers or query parameters to an
:class:`OutgoingRequest`; it never changes the body, which earlier signers may have signed.
"""

from __future__ import annotations

import base64
import hmac
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_pem_private_key,
)

from hookrun.config.model import (
    HmacCondition,
    IpAllowCondition,
    JwtCondition,
    SlackCondition,
    StandardWebhooksCondition,
    StaticSecretCondition,
    StripeCondition,
    Trigger,
)
from hookrun.config.model.base import decode_whsk
from hookrun.events import new_id

__all__ = ["SIGNERS", "OutgoingRequest", "SigningError", "SigningOptions", "sign_request"]


class SigningError(ValueError):
    """The request cannot be signed as the condition requires; the message says what to pass."""


@dataclass
class OutgoingRequest:
    """The launch request being signed: its body, and the headers and query it will carry."""

    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    query: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class SigningOptions:
    """What signers need beyond the config: the time, and a private key for asymmetric conditions.

    ``private_key`` is the PEM text of a key for conditions whose config holds only the public
    half (the CLI's ``--private-key``); signers that need it raise :class:`SigningError` without it.
    """

    now: float
    private_key: bytes | None = None


Signer = Callable[[Any, OutgoingRequest, SigningOptions], None]


def _sign_hmac(c: HmacCondition, out: OutgoingRequest, opts: SigningOptions) -> None:
    digest = hmac.digest(c._key, out.body, c.algorithm)
    encoded = digest.hex() if c.encoding == "hex" else base64.b64encode(digest).decode()
    out.headers[c.header] = c.prefix + encoded


def _sign_static_secret(
    c: StaticSecretCondition, out: OutgoingRequest, opts: SigningOptions
) -> None:
    secret = c.secret.get_secret_value()
    if c.header is not None:
        out.headers[c.header] = secret
    else:
        out.query[c.query or ""] = secret


def _sign_standard_webhooks(
    c: StandardWebhooksCondition, out: OutgoingRequest, opts: SigningOptions
) -> None:
    msg_id = out.headers.setdefault("webhook-id", f"msg_{new_id()}")
    timestamp = str(int(opts.now))
    signed = f"{msg_id}.{timestamp}.".encode() + out.body
    if c.secret is not None:
        signature = f"v1,{base64.b64encode(hmac.digest(c._key, signed, 'sha256')).decode()}"
    else:
        key = _ed25519_key(opts.private_key)
        public = c._public_key
        if public is None or key.public_key().public_bytes_raw() != public.public_bytes_raw():
            raise SigningError("the private key is not the one of the condition's 'whpk_' key")
        signature = f"v1a,{base64.b64encode(key.sign(signed)).decode()}"
    out.headers["webhook-timestamp"] = timestamp
    out.headers["webhook-signature"] = signature


def _ed25519_key(private_key: bytes | None) -> Ed25519PrivateKey:
    """The `v1a` signing key from a `whsk_` secret key or an ed25519 PEM private key."""
    if private_key is None:
        raise SigningError("signing v1a needs the private key ('whsk_...' or a PEM)")
    try:
        if private_key.strip().startswith(b"whsk_"):
            return decode_whsk(private_key.strip().decode())
        key = load_pem_private_key(private_key, password=None)
    except (ValueError, TypeError, UnicodeDecodeError):
        raise SigningError("the private key is neither 'whsk_...' nor a PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningError("v1a signs with an ed25519 private key")
    return key


def _sign_stripe(c: StripeCondition, out: OutgoingRequest, opts: SigningOptions) -> None:
    timestamp = str(int(opts.now))
    digest = hmac.digest(c._key, timestamp.encode() + b"." + out.body, "sha256").hex()
    out.headers["Stripe-Signature"] = f"t={timestamp},v1={digest}"


def _sign_slack(c: SlackCondition, out: OutgoingRequest, opts: SigningOptions) -> None:
    timestamp = str(int(opts.now))
    digest = hmac.digest(c._key, f"v0:{timestamp}:".encode() + out.body, "sha256").hex()
    out.headers["X-Slack-Request-Timestamp"] = timestamp
    out.headers["X-Slack-Signature"] = f"v0={digest}"


def _sign_ip_allow(c: IpAllowCondition, out: OutgoingRequest, opts: SigningOptions) -> None:
    """Nothing to add: the sender's address decides, and the gateway sees the one connected from."""


#: How long a token minted by ``hookrun send`` is valid.
JWT_LIFETIME_S = 300


def _sign_jwt(c: JwtCondition, out: OutgoingRequest, opts: SigningOptions) -> None:
    """A token with ``exp``, and ``iss``/``aud`` when the condition checks them.

    HS* tokens are minted from the condition's secret; the others need the private key
    (``opts.private_key``), and with a JWKS file the token names the matching key's ``kid``.
    """
    now = int(opts.now)
    claims: dict[str, Any] = {"sub": "hookrun-send", "iat": now, "exp": now + JWT_LIFETIME_S}
    if c.issuer is not None:
        claims["iss"] = c.issuer
    if c.audience is not None:
        claims["aud"] = c.audience if isinstance(c.audience, str) else c.audience[0]
    headers: dict[str, str] | None = None
    if c.secret is not None:
        key: Any = c._key
        algorithm: str = c.algorithms[0]
    else:
        key, algorithm, kid = _private_key_for(c, opts.private_key)
        headers = {"kid": kid} if kid else None
    token = jwt.encode(claims, key, algorithm=algorithm, headers=headers)
    if c.query is not None:
        out.query[c.query] = token
    elif c.cookie is not None:
        out.headers["Cookie"] = f"{c.cookie}={token}"
    elif c.header is not None:
        out.headers[c.header] = token
    else:
        out.headers["Authorization"] = f"Bearer {token}"


def _private_key_for(c: JwtCondition, pem: bytes | None) -> tuple[Any, str, str | None]:
    """(private key, algorithm, JWKS kid or None) to sign for ``c`` with the PEM ``pem``."""
    if pem is None:
        raise SigningError(f"signing {'/'.join(c.algorithms)} needs the private key (PEM)")
    try:
        key = load_pem_private_key(pem, password=None)
    except (ValueError, TypeError):
        raise SigningError("the private key is not an unencrypted PEM private key") from None
    public = key.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    for kid, jwk in c._jwks.items():
        if jwk.key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo) == public:
            return key, jwk.algorithm_name, kid or None
    if c._jwks:
        raise SigningError("the private key matches no key of the JWKS file")
    for algorithm in c.algorithms:
        try:
            jwt.get_algorithm_by_name(algorithm).prepare_key(key)
        except (jwt.InvalidKeyError, TypeError, ValueError):
            continue
        return key, algorithm, None
    raise SigningError(f"the private key cannot sign {'/'.join(c.algorithms)}")


#: Condition model class -> its signer. Every condition type needs one (tests/config/test_signing.py).
SIGNERS: dict[type[Any], Signer] = {
    HmacCondition: _sign_hmac,
    StaticSecretCondition: _sign_static_secret,
    StandardWebhooksCondition: _sign_standard_webhooks,
    StripeCondition: _sign_stripe,
    SlackCondition: _sign_slack,
    IpAllowCondition: _sign_ip_allow,
    JwtCondition: _sign_jwt,
}


def sign_request(trigger: Trigger, out: OutgoingRequest, opts: SigningOptions) -> OutgoingRequest:
    """Add to ``out`` what every condition of ``trigger`` checks, in the conditions' order.

    Returns ``out``. Raises :class:`SigningError` naming the condition (``conditions[1] (jwt)``)
    when one cannot be signed, e.g. without the private key it needs.
    """
    for index, condition in enumerate(trigger.conditions):
        signer = SIGNERS.get(type(condition))
        if signer is None:
            raise SigningError(f"conditions[{index}] ({condition.type}): no signer for this type")
        try:
            signer(condition, out, opts)
        except SigningError as exc:
            raise SigningError(f"conditions[{index}] ({condition.type}): {exc}") from None
    return out
