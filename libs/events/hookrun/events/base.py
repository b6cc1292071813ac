"""The Event base class: an immutable pydantic model plus the CloudEvents envelope fields."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field

from hookrun.events.tracing import TraceContext

#: Fields that travel in the CloudEvents headers, not in the value.
ENVELOPE_FIELDS = frozenset({"event_id", "occurred_at", "source", "traceparent", "tracestate"})


def utcnow() -> datetime:
    """Return the current time as an aware UTC datetime."""
    return datetime.now(UTC)


def new_id(at: datetime | None = None) -> str:
    """Return a fresh identifier: a UUIDv7 (RFC 9562) of ``at`` (default now), canonical text.

    The first 48 bits are the Unix time in milliseconds and 74 of the rest are random, so ids
    made later sort later: the store's tables and indexes keyed by run, execution and pipeline
    ids grow at one end instead of everywhere, and their write cost stays flat as history
    grows (decision 0062). Built from bytes directly: ``str(uuid.UUID(...))`` builds and
    validates an object only to print it, and the gateway takes two ids per launch.
    """
    ms = time.time_ns() // 1_000_000 if at is None else int(at.timestamp() * 1000)
    b = bytearray(ms.to_bytes(6, "big") + os.urandom(10))
    b[6] = (b[6] & 0x0F) | 0x70  # version 7
    b[8] = (b[8] & 0x3F) | 0x80  # RFC 9562 variant
    h = b.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


class Event(BaseModel):
    """Base of every hookrun event.

    Subclasses are registered with :func:`hookrun.events.registry.register`, which sets
    ``type`` (the wire name, the CloudEvents ``type``) and ``version``. ``key_field`` names the
    field whose value is the Kafka message key (the aggregate id), so that one aggregate's
    events stay ordered within one partition.
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    type: ClassVar[str] = ""
    version: ClassVar[int] = 1
    topic: ClassVar[str] = ""
    #: Services that append events of this type, and services that act on them.
    producers: ClassVar[tuple[str, ...]] = ()
    consumers: ClassVar[tuple[str, ...]] = ()
    key_field: ClassVar[str] = "run_id"

    event_id: str = Field(default_factory=new_id)
    occurred_at: datetime = Field(default_factory=utcnow)
    source: str = "hookrun"
    #: The run's W3C trace context: the CloudEvents distributed-tracing extension
    #: (``ce_traceparent``, ``ce_tracestate``), the same on every event of a run.
    traceparent: str | None = None
    tracestate: str | None = None

    @property
    def trace(self) -> TraceContext | None:
        """The trace context the event carries, if any."""
        if self.traceparent is None:
            return None
        return TraceContext(self.traceparent, self.tracestate)

    @property
    def key(self) -> str:
        """The Kafka message key: the value of ``key_field``."""
        return str(getattr(self, self.key_field))
