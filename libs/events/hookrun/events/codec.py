"""CloudEvents 1.0 binary content mode on Kafka: envelope in ``ce_*`` headers, data as JSON value."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from pydantic import ValidationError
from pydantic_core import PydanticSerializationError

from hookrun.events import topics
from hookrun.events.base import ENVELOPE_FIELDS, Event
from hookrun.events.registry import lookup
from hookrun.events.tracing import TraceContext, parse
from hookrun.events.upcasters import upcast

Headers = list[tuple[str, bytes]]

SPECVERSION = b"1.0"
CONTENT_TYPE = b"application/json"
_SCHEMA_PREFIX = "urn:hookrun:schema:"
#: The envelope travels in the headers, not in the value.
_NOT_IN_VALUE = set(ENVELOPE_FIELDS)


class InvalidEvent(Exception):
    """A message that cannot be decoded: not a CloudEvent, bad JSON, or data that fails validation."""


class UnrecordableEvent(Exception):
    """An event that cannot become a Kafka record: it does not serialise, or it is too large."""


#: Largest record ``encode`` returns: the topics' message size less room for the batch framing.
MAX_RECORD_BYTES = topics.MAX_MESSAGE_BYTES - 64 * 1024


class UnknownEventType(Exception):
    """A well-formed CloudEvent of a type this version of hookrun does not know; skip it."""

    def __init__(self, type_: str) -> None:
        super().__init__(f"unknown event type {type_!r}")
        self.type = type_


@dataclass(frozen=True, slots=True)
class Record:
    """One Kafka message ready to send: topic, key, value and headers."""

    topic: str
    key: bytes
    value: bytes
    headers: Headers


def dataschema(type_: str, version: int) -> str:
    """Return the ``dataschema`` URI naming a type's schema version."""
    return f"{_SCHEMA_PREFIX}{type_}:v{version}"


def encode(event: Event, *, source: str | None = None, trace: TraceContext | None = None) -> Record:
    """Encode ``event`` as a Kafka record in CloudEvents binary content mode.

    ``source`` overrides the event's own ``source`` (the producing service stamps itself);
    ``trace`` is the run's trace context when the event carries none of its own.
    Raises :class:`UnrecordableEvent` when the event does not serialise (nested too deep) or
    its value is over :data:`MAX_RECORD_BYTES`, which the broker would refuse.
    """
    cls = type(event)
    if not cls.type:
        raise TypeError(f"{cls.__name__} is not registered")
    try:
        value = event.model_dump_json(exclude=_NOT_IN_VALUE).encode()
    except PydanticSerializationError as exc:
        raise UnrecordableEvent(f"{cls.type} does not serialise: {exc}") from exc
    if len(value) > MAX_RECORD_BYTES:
        raise UnrecordableEvent(
            f"{cls.type} is {len(value)} bytes, over the {MAX_RECORD_BYTES} a record may hold"
        )
    key = event.key.encode()
    headers = envelope(
        cls,
        event_id=event.event_id,
        source=source or event.source,
        occurred_at=event.occurred_at,
        key=key,
        trace=event.trace or trace,
    )
    return Record(cls.topic, key, value, headers)


def envelope(
    cls: type[Event],
    *,
    event_id: str,
    source: str,
    occurred_at: datetime,
    key: bytes,
    trace: TraceContext | None = None,
) -> Headers:
    """The CloudEvents headers of an event of the registered type ``cls`` keyed ``key``,
    with the distributed-tracing extension's when ``trace`` is given.

    ``encode`` writes these; so does a producer that writes an event's JSON value itself (the
    gateway's launch record) to get the same envelope.
    """
    headers = [
        ("ce_specversion", SPECVERSION),
        ("ce_id", event_id.encode()),
        ("ce_source", source.encode()),
        ("ce_type", cls.type.encode()),
        ("ce_time", _rfc3339(occurred_at).encode()),
        ("ce_subject", key),
        ("ce_dataschema", dataschema(cls.type, cls.version).encode()),
        ("content-type", CONTENT_TYPE),
    ]
    if trace is not None:
        headers += trace.headers()
    return headers


def decode(value: bytes | None, headers: Any) -> Event:
    """Decode a Kafka record's value and headers into the newest version of its event class.

    Raises :class:`UnknownEventType` for a valid CloudEvent of an unregistered type, and
    :class:`InvalidEvent` for anything else that cannot be decoded.
    """
    h = _headers(headers)
    if h.get("ce_specversion") != "1.0":
        raise InvalidEvent(
            f"not a CloudEvents 1.0 message (ce_specversion={h.get('ce_specversion')!r})"
        )
    type_ = h.get("ce_type")
    if not type_:
        raise InvalidEvent("missing ce_type header")
    cls = lookup(type_)
    if cls is None:
        raise UnknownEventType(type_)
    try:
        data = orjson.loads(value or b"")
    except orjson.JSONDecodeError as exc:
        raise InvalidEvent(f"{type_}: value is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise InvalidEvent(f"{type_}: value is not a JSON object")
    version = _version(h.get("ce_dataschema"), type_)
    if version > cls.version:
        raise InvalidEvent(f"{type_}: version {version} is newer than this reader's {cls.version}")
    try:
        data = upcast(type_, version, cls.version, data)
    except KeyError as exc:
        raise InvalidEvent(f"{type_}: no upcaster from version {version}") from exc
    data["event_id"] = h.get("ce_id") or ""
    data["source"] = h.get("ce_source") or ""
    if "ce_time" in h:
        data["occurred_at"] = h["ce_time"]
    # A malformed trace context from some other producer loses the trace, not the event.
    trace = parse(h.get("ce_traceparent"), h.get("ce_tracestate"))
    data["traceparent"] = None if trace is None else trace.traceparent
    data["tracestate"] = None if trace is None else trace.tracestate
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        raise InvalidEvent(f"{type_}: {_first_error(exc)}") from exc


def to_cloudevent(event: Event) -> dict[str, Any]:
    """Return ``event`` as a structured-mode CloudEvent dict (for display and the admin API)."""
    record = encode(event)
    out: dict[str, Any] = {}
    for name, raw in record.headers:
        if name.startswith("ce_"):
            out[name[3:]] = raw.decode()
    out["datacontenttype"] = "application/json"
    out["data"] = orjson.loads(record.value)
    return out


def _headers(headers: Any) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, raw in headers or ():
        if isinstance(raw, bytes | bytearray):
            try:
                out[name] = raw.decode()
            except UnicodeDecodeError as exc:
                raise InvalidEvent(f"header {name} is not UTF-8") from exc
        elif raw is not None:
            out[name] = str(raw)
    return out


def _version(schema: str | None, type_: str) -> int:
    if not schema:
        return 1
    prefix = f"{_SCHEMA_PREFIX}{type_}:v"
    if not schema.startswith(prefix) or not schema[len(prefix) :].isdigit():
        raise InvalidEvent(f"{type_}: unrecognised ce_dataschema {schema!r}")
    return int(schema[len(prefix) :])


def _rfc3339(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"]) or "value"
    return f"{loc}: {err['msg']}"
