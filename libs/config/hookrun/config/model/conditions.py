"""The conditions a trigger may require of a request, and the provider presets that expand to them."""

from __future__ import annotations

import ipaddress
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    PrivateAttr,
    SecretStr,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from hookrun.config.model.base import (
    Frozen,
    NonEmptyStr,
    Secret,
    decode_whsec,
    require_one_of,
    secret_bytes,
)


class _ConditionBase(Frozen):
    #: Whether the condition checks a signature over the request body. Run info then takes its
    #: run_id from the signed body only: an empty body's signature is one replayable constant.
    signs_body: ClassVar[bool] = False
    #: Lowercased names of the headers it reads a secret or a signature from: they are stored
    #: ``[redacted]`` in TriggerLaunched (a stored signature is a replayable credential).
    secret_headers: ClassVar[frozenset[str]] = frozenset()

    def redacted_headers(self) -> frozenset[str]:
        """The headers of a request this condition checked that must not be stored."""
        return self.secret_headers

    # A fixed sender identity reported as the run's `account` when this condition passes.
    account: str | None = None


class HmacCondition(_ConditionBase):
    signs_body: ClassVar[bool] = True

    type: Literal["hmac"]
    header: NonEmptyStr
    secret: Secret
    algorithm: Literal["sha1", "sha256", "sha512"] = "sha256"
    encoding: Literal["hex", "base64"] = "hex"
    prefix: str = ""

    _key: bytes = PrivateAttr(b"")
    _prefix: bytes = PrivateAttr(b"")

    def _post_init(self) -> None:
        self._key = secret_bytes(self.secret)
        self._prefix = self.prefix.encode()

    def redacted_headers(self) -> frozenset[str]:
        return frozenset({self.header.lower()})


class StaticSecretCondition(_ConditionBase):
    type: Literal["static_secret"]
    header: NonEmptyStr | None = None
    query: NonEmptyStr | None = None
    secret: Secret

    _key: bytes = PrivateAttr(b"")

    @model_validator(mode="after")
    def _exactly_one_place(self) -> StaticSecretCondition:
        require_one_of(self, "header", "query")
        return self

    def _post_init(self) -> None:
        self._key = secret_bytes(self.secret)

    def redacted_headers(self) -> frozenset[str]:
        return frozenset({self.header.lower()}) if self.header is not None else frozenset()


class _TimestampedCondition(_ConditionBase):
    signs_body: ClassVar[bool] = True

    secret: Secret
    tolerance_s: int = Field(default=300, gt=0)

    _key: bytes = PrivateAttr(b"")

    def _post_init(self) -> None:
        self._key = secret_bytes(self.secret)


class StandardWebhooksCondition(_TimestampedCondition):
    type: Literal["standard_webhooks"]
    secret_headers: ClassVar[frozenset[str]] = frozenset({"webhook-signature", "svix-signature"})

    @field_validator("secret")
    @classmethod
    def _whsec_is_base64(cls, secret: SecretStr) -> SecretStr:
        value = secret.get_secret_value()
        if value.startswith("whsec_"):
            decode_whsec(value)
        return secret

    def _post_init(self) -> None:
        value = self.secret.get_secret_value()
        # `whsec_<base64>` is the standard form; a secret without the prefix is used as raw bytes.
        self._key = decode_whsec(value) if value.startswith("whsec_") else value.encode()


class StripeCondition(_TimestampedCondition):
    type: Literal["stripe"]
    secret_headers: ClassVar[frozenset[str]] = frozenset({"stripe-signature"})


class SlackCondition(_TimestampedCondition):
    type: Literal["slack"]
    secret_headers: ClassVar[frozenset[str]] = frozenset({"x-slack-signature"})


def _network(cidr: str) -> str:
    try:
        ipaddress.ip_network(cidr, strict=False)
    except ValueError:
        raise ValueError(f"not an IP network: {cidr!r}") from None
    return cidr


class IpAllowCondition(_ConditionBase):
    type: Literal["ip_allow"]
    cidrs: tuple[Annotated[str, AfterValidator(_network)], ...] = Field(min_length=1)

    _networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = PrivateAttr(())

    def _post_init(self) -> None:
        self._networks = tuple(ipaddress.ip_network(c, strict=False) for c in self.cidrs)


CONDITION_TYPES = ("hmac", "static_secret", "standard_webhooks", "stripe", "slack", "ip_allow")

# preset name -> (condition fields it stands for, where that provider puts its delivery id)
PRESETS: dict[str, tuple[dict[str, Any], dict[str, str]]] = {
    "github": (
        {
            "type": "hmac",
            "header": "X-Hub-Signature-256",
            "algorithm": "sha256",
            "encoding": "hex",
            "prefix": "sha256=",
        },
        {"header": "X-GitHub-Delivery"},
    ),
    "stripe": ({"type": "stripe"}, {"payload": "id"}),
    "slack": ({"type": "slack"}, {"payload": "event_id"}),
    "standard_webhooks": ({"type": "standard_webhooks"}, {"header": "webhook-id"}),
}


def _expand_preset(value: Any) -> Any:
    if not isinstance(value, dict) or "preset" not in value:
        return value
    name = value["preset"]
    if name not in PRESETS:
        raise PydanticCustomError(
            "unknown_preset",
            "unknown preset {name} (expected one of {known})",
            {"name": repr(name), "known": ", ".join(PRESETS)},
        )
    if "type" in value:
        raise ValueError("give either 'preset' or 'type', not both")
    fields, _ = PRESETS[name]
    # Keys written next to the preset (secret, tolerance_s, account...) override its defaults.
    return fields | {k: v for k, v in value.items() if k != "preset"}


Condition = Annotated[
    Annotated[
        HmacCondition
        | StaticSecretCondition
        | StandardWebhooksCondition
        | StripeCondition
        | SlackCondition
        | IpAllowCondition,
        Field(discriminator="type"),
    ],
    BeforeValidator(_expand_preset),
]
