"""TriggerLaunched encoded straight to its Kafka record from plain values, without the model."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import orjson

from hookrun.events.codec import MAX_RECORD_BYTES, Record, UnrecordableEvent, envelope
from hookrun.events.runs import TriggerLaunched
from hookrun.events.tracing import TraceContext


def launched_record(
    *,
    event_id: str,
    source: str,
    run_id: str,
    trigger_id: str,
    config_version: str,
    method: str,
    path: str,
    query: Mapping[str, str],
    headers: Mapping[str, str],
    remote_addr: str | None,
    body: bytes,
    delivery_id: str | None = None,
    is_test: bool = False,
    account: str | None = None,
    replay_of: str | None = None,
    trace: TraceContext | None = None,
    account_metadata: Mapping[str, Any] | None = None,
) -> Record:
    """Return the record ``encode(TriggerLaunched(...), source=source)`` would return.

    The same value bytes (field order, compact JSON, UTF-8) and the same CloudEvents headers
    (:func:`~hookrun.events.codec.envelope`), stamped with the current time, without building
    and validating the pydantic model: the launch is the gateway's hot path, and its inputs are
    plain strings already. ``headers`` and ``query`` are stored as given (redacted, header names
    lowercased); the content type is the ``content-type`` header's value; ``trace`` is the
    run's trace context (``ce_traceparent``).
    Raises :class:`~hookrun.events.codec.UnrecordableEvent` when the value is over
    :data:`~hookrun.events.codec.MAX_RECORD_BYTES`, as ``encode`` does.
    """
    value = orjson.dumps(
        {
            "run_id": run_id,
            "trigger_id": trigger_id,
            "config_version": config_version,
            "request": {
                "method": method,
                "path": path,
                "query": query,
                "headers": headers,
                "content_type": headers.get("content-type"),
                "remote_addr": remote_addr,
                "body_b64": base64.b64encode(body).decode(),
            },
            "delivery_id": delivery_id,
            "is_test": is_test,
            "account": account,
            "schedule": None,
            "replay_of": replay_of,
            "account_metadata": account_metadata,
        }
    )
    if len(value) > MAX_RECORD_BYTES:
        raise UnrecordableEvent(
            f"{TriggerLaunched.type} is {len(value)} bytes, over the {MAX_RECORD_BYTES} a record"
            " may hold"
        )
    key = run_id.encode()
    ce_headers = envelope(
        TriggerLaunched,
        event_id=event_id,
        source=source,
        occurred_at=datetime.now(UTC),
        key=key,
        trace=trace,
    )
    return Record(TriggerLaunched.topic, key, value, ce_headers)
