"""Frozen pydantic models of the hookrun config file, with load-time cross-checks."""

from __future__ import annotations

import base64
import binascii
import hashlib
import ipaddress
import re
from collections.abc import Iterator, Mapping
from typing import Annotated, Any, ClassVar, Literal
from urllib.parse import urlsplit

import orjson
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from hookrun.config.templating import (
    coerce_value,
    command_parameter_names,
    is_template,
    parse_path,
)

__all__ = [
    "PRESETS",
    "Action",
    "Condition",
    "CopyPipelineAction",
    "Dedupe",
    "Edge",
    "Environment",
    "HmacCondition",
    "HookrunConfig",
    "Input",
    "IpAllowCondition",
    "Node",
    "Notification",
    "NotifierConfig",
    "Organization",
    "Parameter",
    "Pipeline",
    "Project",
    "Response",
    "RunExecutionAction",
    "RunPipelineAction",
    "SlackCondition",
    "StandardWebhooksCondition",
    "StaticSecretCondition",
    "Step",
    "StripeCondition",
    "Trigger",
    "decode_whsec",
]

TRIGGER_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

Loc = tuple[str | int, ...]


class _Frozen(BaseModel):
    # extra="forbid" turns a typo in the YAML into an error instead of a silently ignored key.
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    def model_post_init(self, context: Any) -> None:
        self._post_init()
        self._publish_private()

    def _publish_private(self) -> None:
        """Copy the private attributes into the instance dict; call again after changing one.

        pydantic keeps them in __pydantic_private__, reached through BaseModel.__getattr__ after
        an ordinary lookup failed: ~2.8 us per read against ~0.08 us for a field, and the
        gateway reads several per launch (keys, prefixes, redaction sets; ~6 % of its CPU).
        """
        if self.__pydantic_private__:
            self.__dict__.update(self.__pydantic_private__)

    def _post_init(self) -> None:
        """Derive the private attributes (subclasses)."""


NonEmptyStr = Annotated[str, Field(min_length=1)]


def _secret_bytes(secret: SecretStr) -> bytes:
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


class Project(_Frozen):
    id: NonEmptyStr
    slug: NonEmptyStr
    name: NonEmptyStr


class Organization(_Frozen):
    id: NonEmptyStr
    slug: NonEmptyStr
    title: NonEmptyStr


class Environment(_Frozen):
    id: NonEmptyStr
    slug: NonEmptyStr
    type: Literal["PRODUCTION", "STAGING", "DEVELOPMENT", "PREVIEW"]


class Parameter(_Frozen):
    name: NonEmptyStr
    type: Literal["integer", "float", "string", "flag"]
    default: Any = None
    optional: bool = False
    description: str | None = None

    @field_validator("name")
    @classmethod
    def _name_is_identifier(cls, name: str) -> str:
        # The name appears in `{parameters.NAME}` placeholders, so it must be unambiguous there.
        if not _IDENTIFIER.fullmatch(name):
            raise ValueError("must be letters, digits and '_', not starting with a digit")
        return name

    @field_validator("default")
    @classmethod
    def _default_has_declared_type(cls, default: Any, info: ValidationInfo) -> Any:
        if default is None or "type" not in info.data:
            return default
        # Keep the typed default so consumers never coerce it again.
        return coerce_value(info.data["type"], default)

    @property
    def required(self) -> bool:
        """True when a value must be supplied because there is no default and it is not optional."""
        return self.default is None and not self.optional


class Input(_Frozen):
    name: NonEmptyStr

    @field_validator("name")
    @classmethod
    def _name_is_a_file_name(cls, name: str) -> str:
        # The input becomes a file of that name in HOOKRUN_INPUTS.
        if name in (".", "..") or "/" in name or "\\" in name or "\0" in name:
            raise ValueError("must be a plain file name")
        return name


class Step(_Frozen):
    name: NonEmptyStr
    command: tuple[str, ...] = Field(min_length=1)
    parameters: tuple[Parameter, ...] = ()
    inputs: tuple[Input, ...] = ()
    # Values may hold `${env:NAME}`; they stay unresolved until the runner starts the execution.
    env: dict[str, str] = Field(default_factory=dict)
    timeout_s: float = Field(default=3600.0, gt=0)
    # How often an execution orphaned by a dead runner may be retried before the run is ABORTED.
    retries: int = Field(default=0, ge=0)

    _parameters: dict[str, Parameter] = PrivateAttr(default_factory=dict)
    _inputs: frozenset[str] = PrivateAttr(default=frozenset())

    def _post_init(self) -> None:
        self._parameters = {p.name: p for p in self.parameters}
        self._inputs = frozenset(i.name for i in self.inputs)

    def parameter(self, name: str) -> Parameter | None:
        """The declared parameter of that name, if any."""
        return self._parameters.get(name)

    @property
    def input_names(self) -> frozenset[str]:
        return self._inputs


class Node(_Frozen):
    name: NonEmptyStr
    step: NonEmptyStr
    parameters: dict[str, Any] = Field(default_factory=dict)


class Edge(_Frozen):
    from_: NonEmptyStr = Field(alias="from")
    to: NonEmptyStr


class Pipeline(_Frozen):
    name: NonEmptyStr
    nodes: tuple[Node, ...] = Field(min_length=1)
    edges: tuple[Edge, ...] = ()

    _nodes: dict[str, Node] = PrivateAttr(default_factory=dict)

    def _post_init(self) -> None:
        self._nodes = {n.name: n for n in self.nodes}

    def node(self, name: str) -> Node | None:
        return self._nodes.get(name)

    def upstream(self, name: str) -> tuple[str, ...]:
        """Nodes that must finish before this one starts (their outputs are its inputs)."""
        return tuple(e.from_ for e in self.edges if e.to == name)

    def downstream(self, name: str) -> tuple[str, ...]:
        return tuple(e.to for e in self.edges if e.from_ == name)

    def topological_order(self) -> tuple[str, ...]:
        """Node names so that every edge points forward; ties keep declaration order.

        Raises ValueError if the edges form a cycle (a loaded config never has one).
        """
        order = _topological_order([n.name for n in self.nodes], self.edges)
        if order is None:
            raise ValueError(f"pipeline {self.name!r} has a cycle")
        return order


def _topological_order(names: list[str], edges: tuple[Edge, ...]) -> tuple[str, ...] | None:
    indegree = dict.fromkeys(names, 0)
    for edge in edges:
        indegree[edge.to] += 1
    ready = [n for n in names if indegree[n] == 0]
    order: list[str] = []
    while ready:
        current = ready.pop(0)
        order.append(current)
        for edge in edges:
            if edge.from_ == current:
                indegree[edge.to] -= 1
                if indegree[edge.to] == 0:
                    ready.append(edge.to)
    return tuple(order) if len(order) == len(names) else None


def _find_cycle(names: list[str], edges: tuple[Edge, ...]) -> list[str]:
    successors: dict[str, list[str]] = {n: [] for n in names}
    for edge in edges:
        successors[edge.from_].append(edge.to)
    state: dict[str, int] = dict.fromkeys(names, 0)  # 0 new, 1 on the stack, 2 done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in successors[node]:
            if state[nxt] == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if state[nxt] == 0 and (cycle := visit(nxt)) is not None:
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for name in names:
        if state[name] == 0 and (cycle := visit(name)) is not None:
            return cycle
    return []


class _ConditionBase(_Frozen):
    #: Whether the condition checks a signature over the request body. Run info then takes its
    #: run_id from the signed body only: an empty body's signature is one replayable constant.
    signs_body: ClassVar[bool] = False

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
        self._key = _secret_bytes(self.secret)
        self._prefix = self.prefix.encode()


class StaticSecretCondition(_ConditionBase):
    type: Literal["static_secret"]
    header: NonEmptyStr | None = None
    query: NonEmptyStr | None = None
    secret: Secret

    _key: bytes = PrivateAttr(b"")

    @model_validator(mode="after")
    def _exactly_one_place(self) -> StaticSecretCondition:
        if (self.header is None) == (self.query is None):
            raise ValueError("give exactly one of 'header' or 'query'")
        return self

    def _post_init(self) -> None:
        self._key = _secret_bytes(self.secret)


class _TimestampedCondition(_ConditionBase):
    signs_body: ClassVar[bool] = True

    secret: Secret
    tolerance_s: int = Field(default=300, gt=0)

    _key: bytes = PrivateAttr(b"")

    def _post_init(self) -> None:
        self._key = _secret_bytes(self.secret)


class StandardWebhooksCondition(_TimestampedCondition):
    type: Literal["standard_webhooks"]

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


class SlackCondition(_TimestampedCondition):
    type: Literal["slack"]


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


class RunExecutionAction(_Frozen):
    action: Literal["run_execution"]
    step: NonEmptyStr
    # Values may be `{payload.path}` templates, resolved per run by the runner.
    parameters: dict[str, Any] = Field(default_factory=dict)
    payload_input: NonEmptyStr | None = None


class RunPipelineAction(_Frozen):
    action: Literal["run_pipeline"]
    pipeline: NonEmptyStr
    # node name -> parameter name -> value or template
    parameters: dict[str, dict[str, Any]] = Field(default_factory=dict)
    payload_input: NonEmptyStr | None = None  # "<node>.<input>"

    def payload_target(self, pipeline: Pipeline) -> tuple[str, str] | None:
        """Split `payload_input` into (node, input) using the pipeline's node names."""
        if self.payload_input is None:
            return None
        # Node and input names may both contain dots; the longest matching node name wins.
        for node in sorted(pipeline.nodes, key=lambda n: len(n.name), reverse=True):
            prefix = node.name + "."
            if self.payload_input.startswith(prefix) and len(self.payload_input) > len(prefix):
                return node.name, self.payload_input[len(prefix) :]
        return None


class CopyPipelineAction(_Frozen):
    action: Literal["copy_pipeline"]
    source_pipeline_id: NonEmptyStr


ACTION_TYPES = ("run_execution", "run_pipeline", "copy_pipeline")

Action = Annotated[
    RunExecutionAction | RunPipelineAction | CopyPipelineAction,
    Field(discriminator="action"),
]


class Response(_Frozen):
    text: str | None = None
    # Named json_ because `json` shadows a BaseModel attribute; the YAML key is `json`.
    json_: Any = Field(default=None, alias="json")

    @model_validator(mode="after")
    def _exactly_one_kind(self) -> Response:
        given = {"text", "json_"} & self.model_fields_set
        if len(given) != 1:
            raise ValueError("give exactly one of 'text' or 'json'")
        if "text" in given and self.text is None:
            raise ValueError("text: must be a string")
        return self


def _one_or_many(value: Any) -> Any:
    return [value] if isinstance(value, str | SecretStr) else value


class Notification(_Frozen):
    url: NonEmptyStr
    # Several secrets while rotating: every delivery is signed with each of them.
    secret: Annotated[tuple[Secret, ...], BeforeValidator(_one_or_many), Field(min_length=1)]
    enabled: bool = True

    _keys: tuple[bytes, ...] = PrivateAttr(())

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL with a host")
        return url

    @field_validator("secret")
    @classmethod
    def _whsec_secrets(cls, secrets: tuple[SecretStr, ...]) -> tuple[SecretStr, ...]:
        for index, secret in enumerate(secrets):
            try:
                decode_whsec(secret.get_secret_value())
            except ValueError as exc:
                where = f"secret {index + 1} of {len(secrets)} " if len(secrets) > 1 else ""
                raise ValueError(f"{where}{exc}") from None
        return secrets

    def _post_init(self) -> None:
        self._keys = tuple(decode_whsec(s.get_secret_value()) for s in self.secret)

    @property
    def signing_keys(self) -> tuple[bytes, ...]:
        """HMAC keys decoded from the `whsec_` secrets, in the configured order."""
        return self._keys


class Dedupe(_Frozen):
    header: NonEmptyStr | None = None
    payload: NonEmptyStr | None = None  # dotted path into the JSON body, e.g. `event.id`

    _path: tuple[str | int, ...] = PrivateAttr(())

    @field_validator("payload")
    @classmethod
    def _path_parses(cls, path: str | None) -> str | None:
        if path is not None:
            parse_path(path)
        return path

    @model_validator(mode="after")
    def _exactly_one_source(self) -> Dedupe:
        if (self.header is None) == (self.payload is None):
            raise ValueError("give exactly one of 'header' or 'payload'")
        return self

    def _post_init(self) -> None:
        if self.payload is not None:
            self._path = parse_path(self.payload)


_ALWAYS_REDACTED_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization"})


class Trigger(_Frozen):
    id: str
    title: NonEmptyStr
    enabled: bool = True
    payload_schema: dict[str, Any] | bool | None = None
    conditions: tuple[Condition, ...] = ()
    actions: tuple[Action, ...] = Field(min_length=1)
    response: Response | None = None
    notifications: tuple[Notification, ...] = ()
    # Where the provider puts its delivery id; presets fill it in when it is not given.
    dedupe: Dedupe | None = None

    _validator: Draft202012Validator | None = PrivateAttr(None)
    _redacted_headers: frozenset[str] = PrivateAttr(_ALWAYS_REDACTED_HEADERS)
    _redacted_query: frozenset[str] = PrivateAttr(frozenset())
    _signs_body: bool = PrivateAttr(False)

    @model_validator(mode="before")
    @classmethod
    def _dedupe_from_preset(cls, data: Any) -> Any:
        if not isinstance(data, dict) or data.get("dedupe") is not None:
            return data
        for condition in data.get("conditions") or ():
            if isinstance(condition, dict) and condition.get("preset") in PRESETS:
                return data | {"dedupe": PRESETS[condition["preset"]][1]}
        return data

    @field_validator("id")
    @classmethod
    def _url_safe_id(cls, trigger_id: str) -> str:
        if not TRIGGER_ID_PATTERN.fullmatch(trigger_id):
            raise ValueError(
                "must be 1-128 letters, digits, '_', '.' or '-', starting with a letter or digit"
            )
        return trigger_id

    @field_validator("payload_schema")
    @classmethod
    def _valid_json_schema(cls, schema: dict[str, Any] | bool | None) -> Any:
        if schema is None:
            return None
        try:
            Draft202012Validator.check_schema(schema)
        except SchemaError as exc:
            where = f" at {exc.json_path}" if exc.path else ""
            raise ValueError(f"invalid JSON Schema{where}: {exc.message}") from None
        return schema

    def _post_init(self) -> None:
        if self.payload_schema is not None:
            self._validator = Draft202012Validator(
                self.payload_schema, format_checker=Draft202012Validator.FORMAT_CHECKER
            )
        self._redacted_headers = _ALWAYS_REDACTED_HEADERS | {
            c.header.lower()
            for c in self.conditions
            if isinstance(c, StaticSecretCondition) and c.header is not None
        }
        self._redacted_query = frozenset(
            c.query
            for c in self.conditions
            if isinstance(c, StaticSecretCondition) and c.query is not None
        )
        self._signs_body = any(c.signs_body for c in self.conditions)

    @property
    def payload_validator(self) -> Draft202012Validator | None:
        """A ready validator for `payload_schema` (built once at load), or None."""
        return self._validator

    @property
    def signs_body(self) -> bool:
        """Whether any of the conditions checks a signature over the request body."""
        return self._signs_body


class NotifierConfig(_Frozen):
    allow_private_targets: bool = False
    timeout_s: float = Field(default=10.0, gt=0)
    retry_schedule_s: tuple[Annotated[float, Field(ge=0)], ...] = Field(
        default=(0.0, 5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0), min_length=1
    )
    jitter: float = Field(default=0.2, ge=0, le=1)


class HookrunConfig(_Frozen):
    project: Project
    organization: Organization
    environment: Environment
    steps: tuple[Step, ...] = ()
    pipelines: tuple[Pipeline, ...] = ()
    triggers: tuple[Trigger, ...] = ()
    notifier: NotifierConfig = Field(default_factory=NotifierConfig)

    _steps: dict[str, Step] = PrivateAttr(default_factory=dict)
    _pipelines: dict[str, Pipeline] = PrivateAttr(default_factory=dict)
    _triggers: dict[str, Trigger] = PrivateAttr(default_factory=dict)
    _config_version: str = PrivateAttr("")
    _config_dir: str = PrivateAttr(".")

    @model_validator(mode="after")
    def _references_resolve(self) -> HookrunConfig:
        problems = list(_check_references(self))
        if problems:
            raise ValidationError.from_exception_data(
                type(self).__name__,
                [
                    InitErrorDetails(
                        type=PydanticCustomError("invalid_reference", "{reason}", {"reason": r}),
                        loc=loc,
                        input=None,
                    )
                    for loc, r in problems
                ],
            )
        return self

    def _post_init(self) -> None:
        self._steps = {s.name: s for s in self.steps}
        self._pipelines = {p.name: p for p in self.pipelines}
        self._triggers = {t.id: t for t in self.triggers}
        # The loader replaces this with the hash of the file bytes; this covers direct construction.
        dumped = orjson.dumps(self.model_dump(mode="json", by_alias=True))
        self._config_version = hashlib.sha256(dumped).hexdigest()[:12]

    @property
    def config_version(self) -> str:
        """First 12 hex chars of the sha256 of the config file's bytes."""
        return self._config_version

    @property
    def config_dir(self) -> str:
        """Directory of the config file; `{config_dir}` in step commands expands to it."""
        return self._config_dir

    def step(self, name: str) -> Step | None:
        return self._steps.get(name)

    def pipeline(self, name: str) -> Pipeline | None:
        return self._pipelines.get(name)

    def trigger(self, trigger_id: str) -> Trigger | None:
        return self._triggers.get(trigger_id)

    def with_source(self, config_version: str, config_dir: str) -> HookrunConfig:
        """Attach the file-derived version and directory (used by the loader)."""
        self._config_version = config_version
        self._config_dir = config_dir
        self._publish_private()
        return self


def _duplicates(names: list[str]) -> Iterator[tuple[int, str]]:
    seen: set[str] = set()
    for index, name in enumerate(names):
        if name in seen:
            yield index, name
        seen.add(name)


def _check_references(config: HookrunConfig) -> Iterator[tuple[Loc, str]]:
    steps = {s.name: s for s in config.steps}
    pipelines = {p.name: p for p in config.pipelines}
    for i, name in _duplicates([s.name for s in config.steps]):
        yield ("steps", i, "name"), f"duplicate step name {name!r}"
    for i, step in enumerate(config.steps):
        yield from _check_step(("steps", i), step)
    for i, name in _duplicates([p.name for p in config.pipelines]):
        yield ("pipelines", i, "name"), f"duplicate pipeline name {name!r}"
    for i, pipeline in enumerate(config.pipelines):
        yield from _check_pipeline(("pipelines", i), pipeline, steps)
    for i, trigger_id in _duplicates([t.id for t in config.triggers]):
        yield ("triggers", i, "id"), f"duplicate trigger id {trigger_id!r}"
    for i, trigger in enumerate(config.triggers):
        for j, action in enumerate(trigger.actions):
            loc: Loc = ("triggers", i, "actions", j)
            if isinstance(action, RunExecutionAction):
                yield from _check_run_execution(loc, action, steps)
            elif isinstance(action, RunPipelineAction):
                yield from _check_run_pipeline(loc, action, pipelines, steps)


def _check_step(loc: Loc, step: Step) -> Iterator[tuple[Loc, str]]:
    for k, name in _duplicates([p.name for p in step.parameters]):
        yield (*loc, "parameters", k, "name"), f"duplicate parameter {name!r}"
    for k, name in _duplicates([i.name for i in step.inputs]):
        yield (*loc, "inputs", k, "name"), f"duplicate input {name!r}"
    for k, item in enumerate(step.command):
        for name in command_parameter_names(item):
            if step.parameter(name) is None:
                yield (*loc, "command", k), f"unknown parameter {name!r}"
    for key in step.env:
        if not _IDENTIFIER.fullmatch(key):
            yield (*loc, "env", key), "not a valid environment variable name"


def _check_values(
    loc: Loc, step: Step, values: Mapping[str, Any], owner: str | None
) -> Iterator[tuple[Loc, str]]:
    """Unknown or ill-typed values; with an owner, also required parameters left out."""
    for name, value in values.items():
        param = step.parameter(name)
        if param is None:
            yield (*loc, name), f"step {step.name!r} has no parameter {name!r}"
        elif value is not None and not is_template(value):
            # Templates are resolved per run; literal values can be checked now.
            try:
                coerce_value(param.type, value)
            except ValueError as exc:
                yield (*loc, name), str(exc)
    if owner is not None:
        for param in step.parameters:
            if param.required and param.name not in values:
                yield loc, f"missing required parameter {param.name!r} of {owner}"


def _check_pipeline(
    loc: Loc, pipeline: Pipeline, steps: dict[str, Step]
) -> Iterator[tuple[Loc, str]]:
    names = [n.name for n in pipeline.nodes]
    for k, name in _duplicates(names):
        yield (*loc, "nodes", k, "name"), f"duplicate node name {name!r}"
    for k, node in enumerate(pipeline.nodes):
        step = steps.get(node.step)
        if step is None:
            yield (*loc, "nodes", k, "step"), f"unknown step {node.step!r}"
            continue
        yield from _check_values((*loc, "nodes", k, "parameters"), step, node.parameters, None)
    known = set(names)
    endpoints_ok = True
    for k, edge in enumerate(pipeline.edges):
        for field, alias in (("from_", "from"), ("to", "to")):
            target = getattr(edge, field)
            if target not in known:
                endpoints_ok = False
                yield (*loc, "edges", k, alias), f"unknown node {target!r}"
    if endpoints_ok and len(known) == len(names):
        cycle = _find_cycle(names, pipeline.edges)
        if cycle:
            yield (*loc, "edges"), "cycle " + " -> ".join(cycle)


def _check_run_execution(
    loc: Loc, action: RunExecutionAction, steps: dict[str, Step]
) -> Iterator[tuple[Loc, str]]:
    step = steps.get(action.step)
    if step is None:
        yield (*loc, "step"), f"unknown step {action.step!r}"
        return
    yield from _check_values((*loc, "parameters"), step, action.parameters, f"step {step.name!r}")
    if action.payload_input is not None and action.payload_input not in step.input_names:
        yield (
            (*loc, "payload_input"),
            f"step {step.name!r} has no input {action.payload_input!r}",
        )


def _check_run_pipeline(
    loc: Loc,
    action: RunPipelineAction,
    pipelines: dict[str, Pipeline],
    steps: dict[str, Step],
) -> Iterator[tuple[Loc, str]]:
    pipeline = pipelines.get(action.pipeline)
    if pipeline is None:
        yield (*loc, "pipeline"), f"unknown pipeline {action.pipeline!r}"
        return
    for node_name, values in action.parameters.items():
        node = pipeline.node(node_name)
        if node is None:
            yield (
                (*loc, "parameters", node_name),
                f"pipeline {pipeline.name!r} has no node {node_name!r}",
            )
            continue
        step = steps.get(node.step)
        if step is not None:
            # Required parameters may come from the node itself; they are checked below.
            yield from _check_values((*loc, "parameters", node_name), step, values, None)
    for node in pipeline.nodes:
        step = steps.get(node.step)
        if step is None:
            continue
        supplied = set(node.parameters) | set(action.parameters.get(node.name, {}))
        for param in step.parameters:
            if param.required and param.name not in supplied:
                yield (
                    (*loc, "parameters"),
                    f"missing required parameter {param.name!r} of node {node.name!r}",
                )
    if action.payload_input is not None:
        target = action.payload_target(pipeline)
        if target is None:
            yield (
                (*loc, "payload_input"),
                f"must be '<node>.<input>' naming a node of pipeline {pipeline.name!r}",
            )
        else:
            node_name, input_name = target
            node = pipeline.node(node_name)
            step = steps.get(node.step) if node is not None else None
            if step is not None and input_name not in step.input_names:
                yield (
                    (*loc, "payload_input"),
                    f"step {step.name!r} of node {node_name!r} has no input {input_name!r}",
                )
