"""The frozen base of every config model, and the field types and helpers they share."""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, SecretStr

#: A parameter name or an environment variable name.
IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

#: Where in the config file a problem is, as pydantic reports error locations.
Loc = tuple[str | int, ...]


class Frozen(BaseModel):
    """Base of the config models: immutable, no unknown keys, derived private attributes."""

    # extra="forbid" turns a typo in the YAML into an error instead of a silently ignored key.
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    def model_post_init(self, context: Any) -> None:
        self._post_init()
        self._publish_private()

    def _publish_private(self) -> None:
        """Copy the private attributes into the instance dict; call again after changing one.

        pydantic keeps them in __pydantic_private__, reached through BaseModel.__getattr__ only
        after an ordinary lookup failed, many times slower than a field; the gateway reads
        several per launch (keys, prefixes, redaction sets).
        """
        if self.__pydantic_private__:
            self.__dict__.update(self.__pydantic_private__)

    def _post_init(self) -> None:
        """Derive the private attributes (subclasses)."""


NonEmptyStr = Annotated[str, Field(min_length=1)]


def check_regex(pattern: str | None) -> str | None:
    """``pattern`` unchanged; ValueError saying why when it is not a Python regular expression."""
    if pattern is not None:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"invalid regular expression: {exc}") from None
    return pattern


def require_one_of(model: BaseModel, first: str, second: str) -> None:
    """Raise ValueError unless exactly one of the two optional fields is given."""
    if (getattr(model, first) is None) == (getattr(model, second) is None):
        raise ValueError(f"give exactly one of {first!r} or {second!r}")


def secret_bytes(secret: SecretStr) -> bytes:
    """The secret's text as UTF-8 bytes (an HMAC key)."""
    return secret.get_secret_value().encode()


def _non_empty_secret(secret: SecretStr) -> SecretStr:
    if not secret.get_secret_value():
        raise ValueError("secret must not be empty")
    return secret


Secret = Annotated[SecretStr, AfterValidator(_non_empty_secret)]


def _prefixed_base64(value: str, prefix: str) -> bytes:
    """The bytes of ``<prefix><base64>`` (Standard Webhooks' key forms); ValueError if not one."""
    if not value.startswith(prefix):
        raise ValueError(f"must start with {prefix!r}")
    encoded = value[len(prefix) :]
    try:
        # Senders often drop base64 padding; restore it the way the standardwebhooks library does.
        return base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"must be {prefix!r} followed by base64") from None


def decode_whsec(secret: str) -> bytes:
    """Key bytes of a `whsec_<base64>` secret; raises ValueError (without the value) if bad."""
    key = _prefixed_base64(secret, "whsec_")
    if not key:
        raise ValueError("must be 'whsec_' followed by a non-empty base64 key")
    return key


def decode_whsk(secret: str) -> Ed25519PrivateKey:
    """The ed25519 key of a `whsk_<base64>` secret key (Standard Webhooks' asymmetric `v1a`):
    the 32-byte seed, or the seed and public key (64 bytes, as libsodium keeps them).

    Raises ValueError (without the value) if it is not one.
    """
    raw = _prefixed_base64(secret, "whsk_")
    if len(raw) not in (32, 64):
        raise ValueError("must be 'whsk_' followed by a 32- or 64-byte ed25519 key in base64")
    key = Ed25519PrivateKey.from_private_bytes(raw[:32])
    if len(raw) == 64 and key.public_key().public_bytes_raw() != raw[32:]:
        raise ValueError("the public half of the 64-byte 'whsk_' key does not match its seed")
    return key


def decode_whpk(public_key: str) -> Ed25519PublicKey:
    """The ed25519 key of a `whpk_<base64>` public key (Standard Webhooks' `v1a` verifiers).

    Raises ValueError if it is not one.
    """
    raw = _prefixed_base64(public_key, "whpk_")
    if len(raw) != 32:
        raise ValueError("must be 'whpk_' followed by a 32-byte ed25519 public key in base64")
    return Ed25519PublicKey.from_public_bytes(raw)


@dataclass(frozen=True)
class SigningKeys:
    """The keys a subscription's secrets sign each delivery with, in the configured order."""

    #: HMAC-SHA256 keys of the `whsec_` secrets: one `v1,` signature each.
    hmac: tuple[bytes, ...] = ()
    #: ed25519 keys of the `whsk_` secrets: one `v1a,` signature each.
    ed25519: tuple[Ed25519PrivateKey, ...] = ()
    #: The first `whsec_` secret's text: Trigger.dev's `X-Trigger-Signature-256` key (None
    #: with `whsk_` secrets only: that header exists for HMAC receivers alone).
    trigger_secret: str | None = None


def signing_keys(secrets: Sequence[str]) -> SigningKeys:
    """Parse `whsec_` and `whsk_` secrets; raises ValueError naming which one is bad (never
    its value)."""
    hmac_keys: list[bytes] = []
    ed25519_keys: list[Ed25519PrivateKey] = []
    for index, secret in enumerate(secrets):
        try:
            if secret.startswith("whsk_"):
                ed25519_keys.append(decode_whsk(secret))
            elif secret.startswith("whsec_"):
                hmac_keys.append(decode_whsec(secret))
            else:
                raise ValueError("must start with 'whsec_' (v1, HMAC) or 'whsk_' (v1a, ed25519)")
        except ValueError as exc:
            where = f"secret {index + 1} of {len(secrets)} " if len(secrets) > 1 else ""
            raise ValueError(f"{where}{exc}") from None
    trigger_secret = next((s for s in secrets if s.startswith("whsec_")), None)
    return SigningKeys(tuple(hmac_keys), tuple(ed25519_keys), trigger_secret)


#: Headers a subscription's `headers` may not set: hop-by-hop ones (RFC 9110 7.6.1), those the
#: HTTP client computes, and those the notifier signs and traces each delivery with.
RESERVED_HEADERS = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
        "content-type",
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
        "x-trigger-signature-256",
        "traceparent",
        "tracestate",
    }
)
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
#: Printable ASCII and tabs: what the notifier's HTTP client sends in a header value.
_VALUE = re.compile(r"[\t\x20-\x7e]*")


def check_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """Return ``headers`` if each may be sent with a delivery; raise ValueError naming the
    header that may not (reserved, not an HTTP token, or a value with a line break)."""
    for name, value in headers.items():
        if not _TOKEN.fullmatch(name):
            raise ValueError(f"header {name!r}: not a valid header name")
        if name.lower() in RESERVED_HEADERS:
            raise ValueError(
                f"header {name} may not be set: hookrun sets it (hop-by-hop or signature)"
            )
        if not isinstance(value, str) or not _VALUE.fullmatch(value):
            raise ValueError(
                f"header {name}: the value must be printable ASCII without line breaks"
            )
    return dict(headers)
