"""A run's W3C trace context, and OpenTelemetry spans when ``OTEL_*`` asks for them.

Every event of a run carries its launch's trace context as the CloudEvents
distributed-tracing extension (``ce_traceparent``, ``ce_tracestate``): the gateway continues
the sender's ``traceparent`` or starts a trace, and every service copies the run's context onto
what it appends. That costs a header, so it is always on. Spans are made only once
:func:`configure` found an OTLP endpoint (``OTEL_EXPORTER_OTLP_ENDPOINT``); until then the
OpenTelemetry SDK is not even imported, and every span helper here is a check of one global.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from datetime import datetime
from random import randbytes
from typing import TYPE_CHECKING, Any, NamedTuple, TypedDict

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span, Tracer

log = logging.getLogger(__name__)

#: The variable that turns spans on: the OTLP/HTTP endpoint they are exported to.
ENDPOINT = "OTEL_EXPORTER_OTLP_ENDPOINT"

#: version-traceid-parentid-flags, lowercase hex; a later version may append ``-<more>``.
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16
#: W3C: a tracestate of at most 32 list members; 512 characters is what every vendor must
#: pass on. Anything else (or a character a header cannot carry) drops the tracestate, never
#: the trace.
_MAX_TRACESTATE = 512
_MAX_MEMBERS = 32
_TRACESTATE_CHARS = re.compile(r"[\x20-\x7e]*")


class TraceContext(NamedTuple):
    """A W3C trace context: a valid version-00 ``traceparent`` and an optional ``tracestate``.

    A named tuple: built once per launch, it costs a fraction of a frozen dataclass.
    """

    traceparent: str
    tracestate: str | None = None

    @property
    def trace_id(self) -> str:
        """The 32 hex digits of the trace id."""
        return self.traceparent[3:35]

    @property
    def span_id(self) -> str:
        """The 16 hex digits of the parent span id."""
        return self.traceparent[36:52]

    @property
    def sampled(self) -> bool:
        return bool(int(self.traceparent[53:55], 16) & 1)

    def headers(self) -> list[tuple[str, bytes]]:
        """The CloudEvents extension headers of a Kafka record."""
        out = [("ce_traceparent", self.traceparent.encode())]
        if self.tracestate:
            out.append(("ce_tracestate", self.tracestate.encode()))
        return out

    def http_headers(self) -> dict[str, str]:
        """The ``traceparent`` (and ``tracestate``) headers of an HTTP request."""
        if self.tracestate:
            return {"traceparent": self.traceparent, "tracestate": self.tracestate}
        return {"traceparent": self.traceparent}


def parse(traceparent: str | None, tracestate: str | None = None) -> TraceContext | None:
    """The trace context of a ``traceparent`` header, or None when it is missing or invalid.

    Follows W3C Trace Context: lowercase hex; version ``ff``, an all-zero trace or parent id
    are invalid; version 00 is exactly 55 characters, a later version may carry more after a
    ``-`` (read as version 00). ``tracestate`` is kept only with a valid ``traceparent``, and
    only when it is printable ASCII of at most 32 members and 512 characters.
    """
    if not traceparent:
        return None
    value = traceparent.strip()
    if _TRACEPARENT.match(value) is None:
        return None
    version = value[:2]
    if version == "ff" or value[3:35] == _ZERO_TRACE or value[36:52] == _ZERO_SPAN:
        return None
    if len(value) != 55:
        if version == "00" or value[55] != "-":
            return None
        value = "00" + value[2:55]
    return TraceContext(value, _tracestate(tracestate))


def _tracestate(value: str | None) -> str | None:
    if not value:
        return None
    value = value.strip()
    if (
        not value
        or len(value) > _MAX_TRACESTATE
        or value.count(",") >= _MAX_MEMBERS
        or not _TRACESTATE_CHARS.fullmatch(value)
    ):
        return None
    return value


class TraceFields(TypedDict, total=False):
    """The envelope fields of an event that carry its run's trace context."""

    traceparent: str | None
    tracestate: str | None


def fields(trace: TraceContext | None) -> TraceFields:
    """The envelope fields of an event of a run with the trace context ``trace``."""
    if trace is None:
        return {}
    return {"traceparent": trace.traceparent, "tracestate": trace.tracestate}


def new_trace(*, sampled: bool = False) -> TraceContext:
    """A fresh trace: random trace and span ids; ``sampled`` sets the sampled flag.

    The ids come from ``random``, as the OpenTelemetry SDK's do: they must be unique, not
    secret, and a system call per launch would cost more than the rest of this module.
    """
    ids = randbytes(24).hex()
    trace_id, span_id = ids[:32], ids[32:]
    if trace_id == _ZERO_TRACE or span_id == _ZERO_SPAN:  # W3C: all zeros is invalid
        return new_trace(sampled=sampled)
    return TraceContext("00-" + trace_id + "-" + span_id + ("-01" if sampled else "-00"))


def of_headers(headers: Any) -> TraceContext | None:
    """The trace context a Kafka record carries (``ce_traceparent``), or None."""
    parent = state = None
    for name, value in headers or ():
        if name == "ce_traceparent":
            parent = value
        elif name == "ce_tracestate":
            state = value
    if parent is None:
        return None
    try:
        return parse(parent.decode(), state.decode() if state else None)
    except (UnicodeDecodeError, AttributeError):
        return None


def for_launch(headers: Mapping[str, str]) -> TraceContext:
    """The trace context of a run launched by a request with these (lowercase) headers.

    With spans on, the launch span's context (a child of the sender's); otherwise the sender's
    ``traceparent`` as it came, or a new trace (not sampled: nothing here records it) when it
    is missing or invalid. The current task is marked as working on it (see
    :func:`working_on`): a request is a task of its own.
    """
    trace = current_context() if _tracer is not None else None
    if trace is None:
        sent = headers.get("traceparent")
        if sent is not None:
            trace = parse(sent, headers.get("tracestate"))
        if trace is None:
            trace = new_trace()
    _current.set(trace)
    return trace


#: The trace of what this task works on now: JSON log lines carry its id as ``trace_id``.
_current: ContextVar[TraceContext | None] = ContextVar("hookrun_trace", default=None)


def current_trace_id() -> str | None:
    """The trace id of what the current task works on (see :func:`working_on`), if any."""
    trace = _current.get()
    return None if trace is None else trace.trace_id


@contextlib.contextmanager
def working_on(trace: TraceContext | None) -> Iterator[None]:
    """Mark the code inside as working on ``trace``: its log lines carry the trace id."""
    token = _current.set(trace)
    try:
        yield
    finally:
        _current.reset(token)


_tracer: Tracer | None = None
_provider: TracerProvider | None = None


def enabled() -> bool:
    """True once :func:`configure` set up an exporter: spans are made and exported."""
    return _tracer is not None


def configure(service: str, environ: Mapping[str, str] | None = None) -> bool:
    """Export spans of ``service`` over OTLP/HTTP when the environment asks for it.

    On when ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) is set,
    unless ``OTEL_SDK_DISABLED=true`` or ``OTEL_TRACES_EXPORTER=none``. The other standard
    variables apply as the SDK reads them (``OTEL_SERVICE_NAME``, default
    ``hookrun-<service>``; ``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_TRACES_SAMPLER[_ARG]``,
    ``OTEL_EXPORTER_OTLP_HEADERS``, ``OTEL_BSP_*``, ...). Returns whether spans are on.
    Raises ValueError naming the variable for a setting hookrun cannot honour (a protocol
    other than ``http/protobuf``, an exporter other than ``otlp``, an endpoint that is no URL).
    """
    global _tracer, _provider
    env = os.environ if environ is None else environ
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    endpoint_var = (
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
        if env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        else ENDPOINT
    )
    endpoint = env.get(endpoint_var, "").strip()
    exporter = env.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower()
    if not endpoint or exporter == "none":
        return False
    if exporter != "otlp":
        raise ValueError(f"OTEL_TRACES_EXPORTER={exporter!r}: hookrun exports otlp or none")
    protocol_var = (
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"
        if env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        else "OTEL_EXPORTER_OTLP_PROTOCOL"
    )
    protocol = env.get(protocol_var, "http/protobuf").strip() or "http/protobuf"
    if protocol != "http/protobuf":
        raise ValueError(
            f"{protocol_var}={protocol!r}: hookrun exports OTLP over http/protobuf only"
            " (a collector's port 4318)"
        )
    if not endpoint.startswith(("http://", "https://")):
        raise ValueError(f"{endpoint_var}={endpoint!r}: not an http:// or https:// URL")

    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create({"service.namespace": "hookrun"})
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: f"hookrun-{service}"}))
    if _provider is not None:
        _provider.shutdown()
    _provider = TracerProvider(resource=resource)
    _provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    _tracer = _provider.get_tracer("hookrun")
    log.info("exporting traces to %s as %s", endpoint, resource.attributes.get(SERVICE_NAME))
    return True


def start(service: str) -> None:
    """:func:`configure` at a service's start: a setting it refuses stops the process (exit 2)
    with a one-line reason. Buffered spans are exported at the process's exit."""
    try:
        configure(service)
    except ValueError as exc:
        print(f"hookrun {service}: {exc}", file=sys.stderr)
        raise SystemExit(2) from exc


def shutdown() -> None:
    """Export the spans still buffered and stop exporting (at a service's stop)."""
    global _tracer, _provider
    if _provider is not None:
        _provider.shutdown()
    _tracer = _provider = None


def _parent(trace: TraceContext | None) -> Context | None:
    """The OpenTelemetry context whose (remote) parent is ``trace``."""
    if trace is None:
        return None
    from opentelemetry import trace as otel
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, TraceState

    state = TraceState.from_header([trace.tracestate]) if trace.tracestate else None
    parent = SpanContext(
        int(trace.trace_id, 16),
        int(trace.span_id, 16),
        is_remote=True,
        trace_flags=TraceFlags(int(trace.traceparent[53:55], 16)),
        trace_state=state,
    )
    return otel.set_span_in_context(NonRecordingSpan(parent))


def _kind(name: str) -> Any:
    from opentelemetry.trace import SpanKind

    return SpanKind[name.upper()]


def current_context() -> TraceContext | None:
    """The trace context of the current (recording or sampled-out) span, if any."""
    if _tracer is None:
        return None
    from opentelemetry import trace as otel

    ctx = otel.get_current_span().get_span_context()
    if not ctx.is_valid:
        return None
    state = ctx.trace_state.to_header() if ctx.trace_state else None
    return TraceContext(
        f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}",
        state or None,
    )


@contextlib.contextmanager
def span(
    name: str,
    *,
    parent: TraceContext | None = None,
    kind: str = "internal",
    attributes: Mapping[str, Any] | None = None,
) -> Iterator[Span | None]:
    """A span around the code inside, the current span there; None when spans are off.

    Its parent is ``parent`` when given, else the current span. An exception escaping the
    block is recorded on the span and sets its status to error.
    """
    if _tracer is None:
        yield None
        return
    with _tracer.start_as_current_span(
        name, context=_parent(parent), kind=_kind(kind), attributes=attributes
    ) as current:
        yield current


def start_span(
    name: str,
    *,
    parent: TraceContext | None,
    kind: str = "internal",
    attributes: Mapping[str, Any] | None = None,
    start: datetime | None = None,
) -> Span | None:
    """Start a span that the caller ends (``span.end()``); None when spans are off.

    Its parent is ``parent`` when given, else the current span; ``start`` backdates it.
    """
    if _tracer is None:
        return None
    return _tracer.start_span(
        name,
        context=_parent(parent),
        kind=_kind(kind),
        attributes=attributes,
        start_time=None if start is None else _ns(start),
    )


def record_span(
    name: str,
    *,
    parent: TraceContext | None,
    start: datetime,
    end: datetime,
    attributes: Mapping[str, Any] | None = None,
    error: str | None = None,
) -> None:
    """Record a span of something that already happened, from ``start`` to ``end``.

    ``error`` marks it failed, with that description. Nothing happens when spans are off.
    """
    started = start_span(name, parent=parent, attributes=attributes, start=start)
    if started is None:
        return
    if error is not None:
        fail(started, error)
    started.end(end_time=max(_ns(end), _ns(start)))


def fail(current: Span, description: str) -> None:
    """Mark ``current`` failed, saying why."""
    from opentelemetry.trace import Status, StatusCode

    current.set_status(Status(StatusCode.ERROR, description))


def _ns(moment: datetime) -> int:
    return int(moment.timestamp() * 1_000_000_000)


def send_span(topic: str, key: bytes | None, headers: Any) -> Span | None:
    """A producer span of one record to ``topic``, ended by :func:`sent`.

    A child of the current span (a launch), else of the record's own trace context; None when
    spans are off or the record belongs to no trace (a trigger log entry, a config version):
    those would each start a trace of one span.
    """
    if _tracer is None:
        return None
    from opentelemetry import trace as otel

    parent = None
    if not otel.get_current_span().get_span_context().is_valid:
        parent = of_headers(headers)
        if parent is None:
            return None
    ce_id = next((value for name, value in headers if name == "ce_id"), None)
    return start_span(
        f"send {topic}",
        parent=parent,
        kind="producer",
        attributes=messaging_attributes("send", topic, key=key, message_id=ce_id),
    )


def sent(current: Span, acked: Any) -> None:
    """End the producer span ``current`` once its record's acknowledgement ``acked`` is done."""
    if acked.cancelled():
        fail(current, "not sent")
    elif acked.exception() is not None:
        fail(current, repr(acked.exception()))
    else:
        meta = acked.result()
        current.set_attribute("messaging.destination.partition.id", str(meta.partition))
        current.set_attribute("messaging.kafka.offset", meta.offset)
    current.end()


def messaging_attributes(
    operation: str,
    topic: str,
    *,
    partition: int | None = None,
    offset: int | None = None,
    key: bytes | None = None,
    message_id: bytes | None = None,
    group: str | None = None,
) -> dict[str, Any]:
    """The attributes of a Kafka span after OpenTelemetry's messaging semantic conventions."""
    attrs: dict[str, Any] = {
        "messaging.system": "kafka",
        "messaging.operation.type": operation,
        "messaging.operation.name": operation,
        "messaging.destination.name": topic,
    }
    if partition is not None:
        attrs["messaging.destination.partition.id"] = str(partition)
    if offset is not None:
        attrs["messaging.kafka.offset"] = offset
    if key is not None:
        attrs["messaging.kafka.message.key"] = key.decode(errors="replace")
    if message_id is not None:
        attrs["messaging.message.id"] = message_id.decode(errors="replace")
    if group is not None:
        attrs["messaging.consumer.group.name"] = group
    return attrs
