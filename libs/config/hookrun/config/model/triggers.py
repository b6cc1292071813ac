"""Triggers: their actions, response, notifications and delivery-id source."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from pydantic import (
    BeforeValidator,
    Field,
    PrivateAttr,
    SecretStr,
    field_validator,
    model_validator,
)

from hookrun.config.model.base import (
    Frozen,
    NonEmptyStr,
    Secret,
    SigningKeys,
    check_headers,
    require_one_of,
    signing_keys,
)
from hookrun.config.model.conditions import PRESETS, Condition
from hookrun.config.model.filters import FilterRule, filter_rules
from hookrun.config.model.schedules import Schedule
from hookrun.config.model.steps import Pipeline
from hookrun.config.templating import parse_path

TRIGGER_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


class RunExecutionAction(Frozen):
    action: Literal["run_execution"]
    step: NonEmptyStr
    # Values may be `{payload.path}` templates, resolved per run by the runner.
    parameters: dict[str, Any] = Field(default_factory=dict)
    payload_input: NonEmptyStr | None = None


class RunPipelineAction(Frozen):
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


class CopyPipelineAction(Frozen):
    action: Literal["copy_pipeline"]
    source_pipeline_id: NonEmptyStr
    #: False: only a pipeline this same trigger created may be copied, so a sender who names
    #: a pipeline id cannot rerun another trigger's pipeline (its parameters and inputs).
    from_any_trigger: bool = False


ACTION_TYPES = ("run_execution", "run_pipeline", "copy_pipeline")

Action = Annotated[
    RunExecutionAction | RunPipelineAction | CopyPipelineAction,
    Field(discriminator="action"),
]


class Response(Frozen):
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


#: A run's outcome, in the RunNotification's vocabulary (``hookrun.events.RunStatus``).
RunStatusName = Literal[
    "SUCCESS", "FAILURE", "TIMED_OUT", "CANCELED", "ABORTED", "UNRESOLVED_AUTH", "INVALID_PAYLOAD"
]


class Notification(Frozen):
    url: NonEmptyStr
    # Several secrets while rotating: every delivery is signed with each of them. `whsec_`
    # secrets sign `v1` (HMAC), `whsk_` secret keys `v1a` (ed25519).
    secret: Annotated[tuple[Secret, ...], BeforeValidator(_one_or_many), Field(min_length=1)]
    enabled: bool = True
    #: Only runs that ended with one of these are delivered; None: every run.
    statuses: tuple[RunStatusName, ...] | None = Field(default=None, min_length=1)
    #: Sent with every delivery (values may be `${env:...}`).
    headers: dict[str, str] = Field(default_factory=dict)

    _keys: SigningKeys = PrivateAttr(default_factory=SigningKeys)

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL with a host")
        return url

    @field_validator("secret")
    @classmethod
    def _signing_secrets(cls, secrets: tuple[SecretStr, ...]) -> tuple[SecretStr, ...]:
        signing_keys([s.get_secret_value() for s in secrets])
        return secrets

    @field_validator("headers")
    @classmethod
    def _sendable_headers(cls, headers: dict[str, str]) -> dict[str, str]:
        return check_headers(headers)

    def _post_init(self) -> None:
        self._keys = signing_keys([s.get_secret_value() for s in self.secret])

    @property
    def signing_keys(self) -> SigningKeys:
        """The keys of the secrets (`whsec_` HMAC, `whsk_` ed25519), in the configured order."""
        return self._keys


class Dedupe(Frozen):
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
        require_one_of(self, "header", "payload")
        return self

    def _post_init(self) -> None:
        if self.payload is not None:
            self._path = parse_path(self.payload)


class RateLimit(Frozen):
    """A token bucket: ``launches`` per ``per_s`` seconds on average, ``burst`` at once."""

    launches: int = Field(ge=1)
    per_s: float = Field(gt=0)
    #: How many launches may come at once after a quiet spell; default ``launches``.
    burst: int | None = Field(default=None, ge=1)

    @property
    def capacity(self) -> int:
        """The bucket's size: ``burst``, or ``launches`` when not given."""
        return self.burst if self.burst is not None else self.launches

    @property
    def per_second(self) -> float:
        """Tokens added per second."""
        return self.launches / self.per_s


_ALWAYS_REDACTED_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization"})


class Trigger(Frozen):
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
    #: Per gateway instance: past it 429 with Retry-After, no run (``rate_limited``).
    rate_limit: RateLimit | None = None
    #: Checked after the conditions: every rule must match, else no run (``filtered``).
    filter: Annotated[
        Annotated[tuple[FilterRule, ...], Field(min_length=1)] | None,
        BeforeValidator(filter_rules),
    ] = None
    # Launches on its own at these times too; conditions still guard the launch URL.
    schedule: Schedule | None = None

    _validator: Draft202012Validator | None = PrivateAttr(None)
    _redacted_headers: frozenset[str] = PrivateAttr(_ALWAYS_REDACTED_HEADERS)
    _redacted_query: frozenset[str] = PrivateAttr(frozenset())
    _signs_body: bool = PrivateAttr(False)
    _filter_reads_payload: bool = PrivateAttr(False)

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
        self._redacted_headers = _ALWAYS_REDACTED_HEADERS.union(
            *(c.redacted_headers() for c in self.conditions)
        )
        self._redacted_query = frozenset().union(*(c.redacted_query() for c in self.conditions))
        self._signs_body = any(c.signs_body for c in self.conditions)
        self._filter_reads_payload = any(r._reads_payload for r in self.filter or ())

    @property
    def payload_validator(self) -> Draft202012Validator | None:
        """A ready validator for `payload_schema` (built once at load), or None."""
        return self._validator

    @property
    def signs_body(self) -> bool:
        """Whether any of the conditions checks a signature over the request body."""
        return self._signs_body
