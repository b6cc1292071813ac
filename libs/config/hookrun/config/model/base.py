"""The frozen base of every config model, and the field types and helpers they share."""

from __future__ import annotations

import base64
import binascii
import re
from typing import Annotated, Any

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


def decode_whsec(secret: str) -> bytes:
    """Key bytes of a `whsec_<base64>` secret; raises ValueError (without the value) if bad."""
    if not secret.startswith("whsec_"):
        raise ValueError("must start with 'whsec_'")
    encoded = secret[len("whsec_") :]
    try:
        # Senders often drop base64 padding; restore it the way the standardwebhooks library does.
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("must be 'whsec_' followed by base64") from None
    if not key:
        raise ValueError("must be 'whsec_' followed by a non-empty base64 key")
    return key
