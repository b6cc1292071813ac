"""The conditions a trigger may require of a request, and the provider presets that expand to them."""

from __future__ import annotations

import ipaddress
import json
import os
from typing import Annotated, Any, ClassVar, Literal

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from hookrun.config.model.base import (
    Frozen,
    NonEmptyStr,
    Secret,
    decode_whpk,
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

    def redacted_query(self) -> frozenset[str]:
        """The query parameters of a request this condition checked that must not be stored."""
        return frozenset()

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

    def redacted_query(self) -> frozenset[str]:
        return frozenset({self.query}) if self.query is not None else frozenset()


class _TimestampedCondition(_ConditionBase):
    signs_body: ClassVar[bool] = True

    secret: Secret
    tolerance_s: int = Field(default=300, gt=0)

    _key: bytes = PrivateAttr(b"")

    def _post_init(self) -> None:
        self._key = secret_bytes(self.secret)


class StandardWebhooksCondition(_TimestampedCondition):
    """Standard Webhooks: `v1` (HMAC-SHA256, a `whsec_` secret) and `v1a` (ed25519, a `whpk_`
    public key) signatures; with both keys configured either kind of signature passes."""

    type: Literal["standard_webhooks"]
    secret_headers: ClassVar[frozenset[str]] = frozenset({"webhook-signature", "svix-signature"})

    secret: Secret | None = None  # type: ignore[assignment]
    public_key: NonEmptyStr | None = None

    _public_key: Ed25519PublicKey | None = PrivateAttr(None)

    @field_validator("secret")
    @classmethod
    def _whsec_is_base64(cls, secret: SecretStr | None) -> SecretStr | None:
        value = secret.get_secret_value() if secret is not None else ""
        if value.startswith("whsec_"):
            decode_whsec(value)
        if value.startswith(("whpk_", "whsk_")):
            raise ValueError(
                "a 'whpk_' public key goes in 'public_key' (the receiver never needs 'whsk_')"
            )
        return secret

    @field_validator("public_key")
    @classmethod
    def _whpk(cls, public_key: str | None) -> str | None:
        if public_key is not None:
            decode_whpk(public_key)
        return public_key

    @model_validator(mode="after")
    def _a_key(self) -> StandardWebhooksCondition:
        if self.secret is None and self.public_key is None:
            raise ValueError(
                "give 'secret' (whsec_, for v1), 'public_key' (whpk_, for v1a) or both"
            )
        return self

    def _post_init(self) -> None:
        value = self.secret.get_secret_value() if self.secret is not None else ""
        # `whsec_<base64>` is the standard form; a secret without the prefix is used as raw bytes.
        self._key = decode_whsec(value) if value.startswith("whsec_") else value.encode()
        if self.public_key is not None and self.public_key.startswith("whpk_"):
            self._public_key = decode_whpk(self.public_key)


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


JWT_ALGORITHMS = ("HS256", "HS384", "HS512", "RS256", "ES256", "EdDSA")
JwtAlgorithm = Literal["HS256", "HS384", "HS512", "RS256", "ES256", "EdDSA"]


def config_path(name: str, info: ValidationInfo) -> str:
    """A path from the config file, relative ones against the config file's directory."""
    base = (info.context or {}).get("config_dir") or "."
    return os.path.join(base, os.path.expanduser(name))


class JwtCondition(_ConditionBase):
    """A JSON Web Token signed with ``secret`` (HS*), a PEM public key or a key of a JWKS file.

    The token's ``sub`` becomes the run's account id, its other claims the account's metadata.
    """

    type: Literal["jwt"]
    algorithms: tuple[JwtAlgorithm, ...] = Field(min_length=1)
    secret: Secret | None = None
    public_key: NonEmptyStr | None = None
    public_key_file: NonEmptyStr | None = None
    jwks_file: NonEmptyStr | None = None
    #: Where the token is: a header (default ``Authorization: Bearer <token>``), a query
    #: parameter or a cookie.
    header: NonEmptyStr | None = None
    query: NonEmptyStr | None = None
    cookie: NonEmptyStr | None = None
    issuer: NonEmptyStr | None = None
    audience: NonEmptyStr | tuple[NonEmptyStr, ...] | None = None
    leeway_s: float = Field(default=0, ge=0)

    #: The key for every algorithm (a secret or a public key), or None with a JWKS file.
    _key: Any = PrivateAttr(None)
    #: A JWKS file's keys by ``kid`` (``""`` for a key without one).
    _jwks: dict[str, jwt.PyJWK] = PrivateAttr(default_factory=dict)
    _header: str = PrivateAttr("authorization")

    @model_validator(mode="after")
    def _load_key(self, info: ValidationInfo) -> JwtCondition:
        places = [name for name in ("header", "query", "cookie") if getattr(self, name)]
        if len(places) > 1:
            raise ValueError("give at most one of 'header', 'query' or 'cookie'")
        sources = ("secret", "public_key", "public_key_file", "jwks_file")
        given = [name for name in sources if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of {', '.join(repr(s) for s in sources)}")
        source = given[0]
        symmetric = [a for a in self.algorithms if a.startswith("HS")]
        # One key never serves both kinds: an HS256 token "signed" with a public key is the
        # classic algorithm-confusion forgery.
        if source == "secret" and len(symmetric) != len(self.algorithms):
            raise ValueError("algorithms: a 'secret' verifies HS256, HS384 and HS512 only")
        if source != "secret" and symmetric:
            raise ValueError(f"algorithms: {symmetric[0]} needs a 'secret', not a public key")
        if source == "jwks_file":
            self._jwks = _load_jwks(self.jwks_file or "", info, self.algorithms)
        else:
            self._key = self._single_key(source, info)
        self._header = (self.header or "authorization").lower()
        self._publish_private()
        return self

    def _single_key(self, source: str, info: ValidationInfo) -> Any:
        if source == "secret":
            assert self.secret is not None
            key: Any = secret_bytes(self.secret)
        else:
            if source == "public_key_file":
                pem = _read(self.public_key_file or "", info, "public_key_file")
            else:
                pem = (self.public_key or "").encode()
            try:
                key = load_pem_public_key(pem)
            except (ValueError, TypeError):
                raise ValueError(f"{source}: not a PEM public key") from None
        for name in self.algorithms:
            algorithm = jwt.get_algorithm_by_name(name)
            try:
                weak = algorithm.check_key_length(algorithm.prepare_key(key))
            except (jwt.InvalidKeyError, TypeError, ValueError):
                raise ValueError(f"{source}: the key cannot verify {name}") from None
            if weak:
                raise ValueError(f"{source}: too weak for {name}: {weak}")
        return key

    def redacted_headers(self) -> frozenset[str]:
        return frozenset({self.header.lower()}) if self.header is not None else frozenset()

    def redacted_query(self) -> frozenset[str]:
        return frozenset({self.query}) if self.query is not None else frozenset()


def _read(name: str, info: ValidationInfo, field: str) -> bytes:
    path = config_path(name, info)
    try:
        with open(path, "rb") as file:
            return file.read()
    except OSError as exc:
        raise ValueError(f"{field}: cannot read {path}: {exc.strerror}") from None


def _load_jwks(name: str, info: ValidationInfo, algorithms: tuple[str, ...]) -> dict[str, Any]:
    raw = _read(name, info, "jwks_file")
    try:
        keys = jwt.PyJWKSet.from_dict(json.loads(raw)).keys
    except (ValueError, jwt.PyJWKError, jwt.PyJWKSetError, TypeError, AttributeError) as exc:
        raise ValueError(f"jwks_file: not a usable JSON Web Key Set: {exc}") from None
    usable = {key.key_id or "": key for key in keys if key.algorithm_name in algorithms}
    if not usable:
        raise ValueError(f"jwks_file: no key for {', '.join(algorithms)}")
    return usable


CONDITION_TYPES = (
    "hmac",
    "static_secret",
    "standard_webhooks",
    "stripe",
    "slack",
    "ip_allow",
    "jwt",
)

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
    # https://docs.gitlab.com/user/project/integrations/webhooks/ : the secret token is sent
    # as is; X-Gitlab-Event-UUID is the same on a retry of the same event.
    "gitlab": (
        {"type": "static_secret", "header": "X-Gitlab-Token"},
        {"header": "X-Gitlab-Event-UUID"},
    ),
    # https://support.atlassian.com/bitbucket-cloud/docs/manage-webhooks/
    "bitbucket": (
        {
            "type": "hmac",
            "header": "X-Hub-Signature",
            "algorithm": "sha256",
            "encoding": "hex",
            "prefix": "sha256=",
        },
        {"header": "X-Request-UUID"},
    ),
    # https://shopify.dev/docs/apps/build/webhooks/verify-deliveries
    "shopify": (
        {"type": "hmac", "header": "X-Shopify-Hmac-Sha256", "encoding": "base64"},
        {"header": "X-Shopify-Webhook-Id"},
    ),
    # Svix signs per Standard Webhooks with svix-* header names
    # (https://docs.svix.com/receiving/verifying-payloads/how-manual).
    "svix": ({"type": "standard_webhooks"}, {"header": "svix-id"}),
    # https://linear.app/developers/webhooks
    "linear": (
        {"type": "hmac", "header": "Linear-Signature", "encoding": "hex"},
        {"header": "Linear-Delivery"},
    ),
    # https://docs.sentry.io/organization/integrations/integration-platform/webhooks/
    "sentry": (
        {"type": "hmac", "header": "Sentry-Hook-Signature", "encoding": "hex"},
        {"header": "Request-ID"},
    ),
    # https://www.typeform.com/developers/webhooks/secure-your-webhooks/
    "typeform": (
        {"type": "hmac", "header": "Typeform-Signature", "encoding": "base64", "prefix": "sha256="},
        {"payload": "event_id"},
    ),
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
        | IpAllowCondition
        | JwtCondition,
        Field(discriminator="type"),
    ],
    BeforeValidator(_expand_preset),
]
