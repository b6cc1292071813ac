"""Checking a trigger's conditions against an inbound request, delivery ids and redaction."""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import jwt
import orjson
from cryptography.exceptions import InvalidSignature

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
from hookrun.config.templating import PayloadPathError, lookup_path
from hookrun.events import Record, new_id
from hookrun.events.launches import launched_record
from hookrun.events.tracing import TraceContext

__all__ = [
    "FALLBACK_DELIVERY_HEADERS",
    "Headers",
    "InboundRequest",
    "Verdict",
    "check_conditions",
    "delivery_id",
    "recorded_launch",
    "redacted_headers",
    "redacted_query",
]

# Headers that carry a provider's delivery id when the trigger does not say where it is.
FALLBACK_DELIVERY_HEADERS = ("x-github-delivery", "webhook-id", "svix-id", "idempotency-key")
# Standard Webhooks senders built on Svix use svix-* names for the same headers.
_HEADER_ALIASES = {"webhook-id": ("webhook-id", "svix-id")}


class Headers(Mapping[str, str]):
    """Case-insensitive, read-only header mapping; the first of repeated headers wins."""

    __slots__ = ("_items",)

    def __init__(self, items: Mapping[str, str] | Iterable[tuple[str, str]] = ()) -> None:
        pairs = items.items() if isinstance(items, Mapping) else items
        store: dict[str, str] = {}
        for key, value in pairs:
            store.setdefault(key.lower(), value)
        self._items = store

    def __getitem__(self, key: str) -> str:
        return self._items[key.lower()]

    def get(self, key: str, default: Any = None) -> Any:
        return self._items.get(key.lower(), default)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key.lower() in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Headers({sorted(self._items)!r})"


@dataclass(frozen=True, slots=True)
class InboundRequest:
    """What the conditions see of a launch or run-info request."""

    method: str
    path: str
    headers: Mapping[str, str]
    query: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""
    remote_addr: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.headers, Headers):
            object.__setattr__(self, "headers", Headers(self.headers))


@dataclass(frozen=True, slots=True)
class Verdict:
    """Outcome of checking all conditions; `reason` is for the trigger log, never the sender."""

    ok: bool
    reason: str
    account: str | None = None
    #: What the condition that identified the sender knows of it (a JWT's other claims).
    account_metadata: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class _Identified:
    """A passed condition that identified the sender (a JWT): its subject and other claims."""

    account: str | None
    metadata: dict[str, Any]


_PASSED = Verdict(ok=True, reason="all conditions passed")
_NO_CONDITIONS = Verdict(ok=True, reason="no conditions")


def check_conditions(trigger: Trigger, request: InboundRequest, now: float) -> Verdict:
    """Check every condition of the trigger (all must pass) at unix time `now`."""
    if not trigger.conditions:
        return _NO_CONDITIONS
    account: str | None = None
    metadata: dict[str, Any] | None = None
    for index, condition in enumerate(trigger.conditions):
        outcome = _CHECKS[type(condition)](condition, request, now)
        if outcome is not None:
            if type(outcome) is not _Identified:
                reason = f"conditions[{index}] ({condition.type}): {outcome}"
                return Verdict(ok=False, reason=reason)
            if account is None and metadata is None:
                account, metadata = outcome.account or condition.account, outcome.metadata
                continue
        if account is None and condition.account is not None:
            account = condition.account
    if account is None and metadata is None:
        return _PASSED
    return Verdict(True, _PASSED.reason, account, metadata)


def _bytes(value: str) -> bytes:
    # Header values arrive latin-1 decoded from ASGI; any byte form works for compare_digest.
    return value.encode("utf-8", "surrogateescape")


def _check_hmac(c: HmacCondition, request: InboundRequest, now: float) -> str | None:
    provided = request.headers.get(c.header)
    if provided is None:
        return f"missing header {c.header}"
    value = _bytes(provided.strip())
    if not value.startswith(c._prefix):
        return f"signature does not start with {c.prefix!r}"
    value = value[len(c._prefix) :]
    digest = hmac.digest(c._key, request.body, c.algorithm)
    if c.encoding == "hex":
        ok = hmac.compare_digest(value.lower(), digest.hex().encode())
    else:
        try:
            ok = hmac.compare_digest(base64.b64decode(value, validate=True), digest)
        except (binascii.Error, ValueError):
            return "malformed signature (not base64)"
    return None if ok else "signature mismatch"


def _check_static_secret(
    c: StaticSecretCondition, request: InboundRequest, now: float
) -> str | None:
    if c.header is not None:
        provided = request.headers.get(c.header)
        if provided is None:
            return f"missing header {c.header}"
    else:
        provided = request.query.get(c.query or "")
        if provided is None:
            return f"missing query parameter {c.query}"
    return None if hmac.compare_digest(_bytes(provided), c._key) else "secret mismatch"


# Unix seconds have 10 digits until the year 2286, so 15 leave room to spare. Thousands of
# digits are more than int() converts (ValueError), hundreds more than a float holds
# (OverflowError).
_MAX_TIMESTAMP_DIGITS = 15


def _timestamp(raw: str) -> int | None:
    raw = raw.strip()
    # isascii() keeps out digits like "²" that isdigit() accepts but int() rejects.
    if len(raw) > _MAX_TIMESTAMP_DIGITS or not (raw.isascii() and raw.isdigit()):
        return None
    return int(raw)


def _outside_tolerance(timestamp: int, now: float, tolerance_s: int) -> str | None:
    skew = abs(now - timestamp)
    if skew > tolerance_s:
        return f"timestamp outside tolerance ({int(skew)}s > {tolerance_s}s)"
    return None


def _check_standard_webhooks(
    c: StandardWebhooksCondition, request: InboundRequest, now: float
) -> str | None:
    headers = request.headers
    prefix = "webhook-" if "webhook-id" in headers else "svix-"
    values = []
    for name in ("id", "timestamp", "signature"):
        value = headers.get(prefix + name)
        if value is None:
            return f"missing header webhook-{name}"
        values.append(value)
    msg_id, raw_timestamp, signatures = values
    timestamp = _timestamp(raw_timestamp)
    if timestamp is None:
        return "invalid timestamp"
    if (late := _outside_tolerance(timestamp, now, c.tolerance_s)) is not None:
        return late
    signed = b"".join((_bytes(msg_id), b".", _bytes(raw_timestamp.strip()), b".", request.body))
    expected = hmac.digest(c._key, signed, "sha256") if c.secret is not None else None
    public_key = c._public_key
    for item in signatures.split():
        version, _, encoded = item.partition(",")
        if version == "v1" and expected is not None:
            try:
                candidate = base64.b64decode(encoded, validate=True)
            except (binascii.Error, ValueError):
                continue
            if hmac.compare_digest(candidate, expected):
                return None
        elif version == "v1a" and public_key is not None:
            try:
                public_key.verify(base64.b64decode(encoded, validate=True), signed)
            except (binascii.Error, ValueError, InvalidSignature):
                continue
            return None
    return "signature mismatch"


def _check_stripe(c: StripeCondition, request: InboundRequest, now: float) -> str | None:
    header = request.headers.get("stripe-signature")
    if header is None:
        return "missing header Stripe-Signature"
    raw_timestamp: str | None = None
    candidates: list[bytes] = []
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t":
            raw_timestamp = value
        elif key == "v1":
            candidates.append(_bytes(value.lower()))
    timestamp = _timestamp(raw_timestamp) if raw_timestamp is not None else None
    if raw_timestamp is None or timestamp is None or not candidates:
        return "malformed Stripe-Signature header"
    if (late := _outside_tolerance(timestamp, now, c.tolerance_s)) is not None:
        return late
    signed = _bytes(raw_timestamp.strip()) + b"." + request.body
    expected = hmac.digest(c._key, signed, "sha256")
    expected_hex = expected.hex().encode()
    if any(hmac.compare_digest(candidate, expected_hex) for candidate in candidates):
        return None
    return "signature mismatch"


def _check_slack(c: SlackCondition, request: InboundRequest, now: float) -> str | None:
    raw_timestamp = request.headers.get("x-slack-request-timestamp")
    if raw_timestamp is None:
        return "missing header X-Slack-Request-Timestamp"
    signature = request.headers.get("x-slack-signature")
    if signature is None:
        return "missing header X-Slack-Signature"
    timestamp = _timestamp(raw_timestamp)
    if timestamp is None:
        return "invalid timestamp"
    if (late := _outside_tolerance(timestamp, now, c.tolerance_s)) is not None:
        return late
    version, _, provided = signature.strip().partition("=")
    if version != "v0":
        return "signature is not v0"
    signed = b"v0:" + _bytes(raw_timestamp.strip()) + b":" + request.body
    expected = hmac.digest(c._key, signed, "sha256").hex().encode()
    return None if hmac.compare_digest(_bytes(provided.lower()), expected) else "signature mismatch"


def _check_ip_allow(c: IpAllowCondition, request: InboundRequest, now: float) -> str | None:
    if request.remote_addr is None:
        return "remote address unknown"
    try:
        address = ipaddress.ip_address(request.remote_addr)
    except ValueError:
        return f"remote address {request.remote_addr!r} is not an IP address"
    # Dual-stack sockets report IPv4 peers as ::ffff:a.b.c.d.
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if any(address in network for network in c._networks):
        return None
    return f"remote address {address} is not allowed"


def _jwt_token(c: JwtCondition, request: InboundRequest) -> tuple[str | None, str]:
    """(the token, "") or (None, why there is none)."""
    if c.query is not None:
        token = request.query.get(c.query)
        return (token, "") if token else (None, f"missing query parameter {c.query}")
    if c.cookie is not None:
        for part in request.headers.get("cookie", "").split(";"):
            name, _, cookie = part.strip().partition("=")
            if name == c.cookie and cookie:
                return cookie.strip('"'), ""
        return None, f"missing cookie {c.cookie}"
    header = request.headers.get(c._header)
    if not header:
        return None, f"missing header {c.header or 'Authorization'}"
    scheme, _, rest = header.strip().partition(" ")
    if scheme.lower() == "bearer":
        return rest.strip() or None, "empty Bearer token"
    if c._header == "authorization":
        return None, "Authorization is not a Bearer token"
    return header.strip(), ""


def _jwt_times(claims: dict[str, Any], now: float, leeway_s: float) -> str | None:
    """Why ``exp``, ``nbf`` or ``iat`` refuse the token at ``now`` (PyJWT's wording), or None."""
    for name in ("exp", "nbf", "iat"):
        value = claims.get(name)
        if value is None and name != "exp":
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"{name} must be a number"
    if claims["exp"] <= now - leeway_s:
        return "Signature has expired"
    if claims.get("nbf") is not None and claims["nbf"] > now + leeway_s:
        return "The token is not yet valid (nbf)"
    if claims.get("iat") is not None and claims["iat"] > now + leeway_s:
        return "The token is not yet valid (iat)"
    return None


def _check_jwt(c: JwtCondition, request: InboundRequest, now: float) -> str | _Identified:
    token, missing = _jwt_token(c, request)
    if token is None:
        return missing
    key: Any = c._key
    if c._jwks:
        try:
            kid = jwt.get_unverified_header(token).get("kid") or ""
        except jwt.InvalidTokenError as exc:
            return f"invalid token: {exc}"
        key = c._jwks.get(str(kid))
        if key is None and not kid and len(c._jwks) == 1:
            [key] = c._jwks.values()
        if key is None:
            return f"invalid token: no key with kid {str(kid)[:100]!r} in the JWKS file"
    try:
        claims = jwt.decode(
            token,
            key,
            algorithms=c.algorithms,
            audience=c.audience,
            issuer=c.issuer,
            options={
                "require": ["exp"],
                "verify_aud": c.audience is not None,
                # Checked below against `now`, the clock every condition is checked at.
                "verify_exp": False,
                "verify_nbf": False,
                "verify_iat": False,
            },
        )
    except jwt.InvalidTokenError as exc:
        return f"invalid token: {exc}"
    if (late := _jwt_times(claims, now, c.leeway_s)) is not None:
        return f"invalid token: {late}"
    subject = claims.pop("sub", None)
    return _Identified(None if subject is None else str(subject), claims)


_CHECKS: dict[type[Any], Callable[[Any, InboundRequest, float], str | _Identified | None]] = {
    HmacCondition: _check_hmac,
    StaticSecretCondition: _check_static_secret,
    StandardWebhooksCondition: _check_standard_webhooks,
    StripeCondition: _check_stripe,
    SlackCondition: _check_slack,
    IpAllowCondition: _check_ip_allow,
    JwtCondition: _check_jwt,
}

_NO_PAYLOAD = object()


def delivery_id(
    trigger: Trigger, request: InboundRequest, payload: Any = _NO_PAYLOAD
) -> str | None:
    """The provider's delivery id of this request, for redelivery dedupe, or None.

    Call it only for a request whose conditions passed. The first condition that verified a
    delivery id decides: Standard Webhooks the signed ``webhook-id`` (or ``svix-id``), Stripe
    the ``id`` of the signed payload, Slack the signed payload's ``event_id`` where it has one.
    An unsigned header such as ``X-GitHub-Delivery`` then cannot replace it: a replayed request
    with a new header would otherwise start a new run. Without a verified id, the trigger's
    ``dedupe`` (which presets fill in) is used; without that, the first present of
    X-GitHub-Delivery, webhook-id, svix-id, Idempotency-Key. Payload paths read the JSON body
    (pass ``payload`` if it is already parsed); a body that is not JSON gives None.
    """
    for condition in trigger.conditions:
        verified = _VERIFIED_IDS.get(type(condition))
        if verified is None:
            continue
        if verified[0] == "header":
            # The header the check signed: webhook-id if present, else svix-id.
            headers = request.headers
            name = "webhook-id" if "webhook-id" in headers else "svix-id"
            return headers.get(name) or None
        if payload is _NO_PAYLOAD:
            payload = _json_or_none(request.body)
        found = _id_at(payload, verified[1])
        if found is not None:
            return found
    dedupe = trigger.dedupe
    if dedupe is None:
        return _first_header(request, FALLBACK_DELIVERY_HEADERS)
    if dedupe.header is not None:
        return _first_header(request, _HEADER_ALIASES.get(dedupe.header.lower(), (dedupe.header,)))
    if payload is _NO_PAYLOAD:
        payload = _json_or_none(request.body)
    return _id_at(payload, dedupe._path)


#: Conditions whose signature covers a delivery id: where it is (a header, or a payload path).
_VERIFIED_IDS: dict[type[Any], tuple[str, tuple[str | int, ...]]] = {
    StandardWebhooksCondition: ("header", ()),
    StripeCondition: ("payload", ("id",)),
    SlackCondition: ("payload", ("event_id",)),
}


def _json_or_none(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return None


def _id_at(payload: Any, path: tuple[str | int, ...]) -> str | None:
    """The string or integer at ``path`` of ``payload`` as a delivery id, else None."""
    try:
        value = lookup_path(payload, path, "")
    except PayloadPathError:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None
    return str(value) or None


def _first_header(request: InboundRequest, names: Iterable[str]) -> str | None:
    for name in names:
        value = request.headers.get(name)
        if value:
            return value
    return None


def redacted_headers(trigger: Trigger) -> frozenset[str]:
    """Lowercased names of request headers that carry secrets and must not be stored."""
    return trigger._redacted_headers


def redacted_query(trigger: Trigger) -> frozenset[str]:
    """Names of query parameters that carry secrets and must not be stored."""
    return trigger._redacted_query


REDACTED = "[redacted]"


def redact(trigger: Trigger, request: InboundRequest) -> tuple[dict[str, str], dict[str, str]]:
    """The request's headers (lowercased names) and query as they may be stored in an event.

    Values of headers and query parameters that carry secrets (every header a condition reads a
    secret or a signature from, a static secret's query parameter, ``Authorization``,
    ``Cookie``, ``Proxy-Authorization``) are replaced by ``[redacted]``.
    """
    hidden_headers = trigger._redacted_headers
    hidden_query = trigger._redacted_query
    headers = {}
    for name, value in request.headers.items():
        lowered = name.lower()
        headers[lowered] = REDACTED if lowered in hidden_headers else value
    query = {k: REDACTED if k in hidden_query else v for k, v in request.query.items()}
    return headers, query


def recorded_launch(
    trigger: Trigger,
    request: InboundRequest,
    *,
    source: str,
    run_id: str,
    config_version: str,
    delivery_id: str | None = None,
    is_test: bool = False,
    account: str | None = None,
    replay_of: str | None = None,
    trace: TraceContext | None = None,
    account_metadata: dict[str, Any] | None = None,
) -> Record:
    """The ``TriggerLaunched`` record of ``request``: raw body, secrets that authenticated it redacted.

    Encoded by :func:`hookrun.events.launches.launched_record` with a fresh event id,
    ``source`` as its ``ce_source`` and ``trace`` as its ``ce_traceparent``; raises
    ``UnrecordableEvent`` as that does.
    """
    headers, query = redact(trigger, request)
    return launched_record(
        event_id=new_id(),
        source=source,
        run_id=run_id,
        trigger_id=trigger.id,
        config_version=config_version,
        method=request.method,
        path=request.path,
        query=query,
        headers=headers,
        remote_addr=request.remote_addr,
        body=request.body,
        delivery_id=delivery_id,
        is_test=is_test,
        account=account,
        replay_of=replay_of,
        trace=trace,
        account_metadata=account_metadata,
    )
