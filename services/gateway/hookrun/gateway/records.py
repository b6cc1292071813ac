"""TriggerLaunched encoded straight to its Kafka record, without building the pydantic model.

Building and validating ``TriggerLaunched`` (and its ``LaunchRequest``) and dumping it again cost
about a tenth of the gateway's CPU per launch (py-spy under load). The gateway's inputs are
already plain strings, so :func:`launched_record` writes the same bytes that
``hookrun.events.encode(TriggerLaunched(...), source=...)`` writes: the same JSON value (field
order, compact separators, UTF-8) and the same CloudEvents headers (``codec.envelope``, which
``encode`` uses too). tests/gateway/test_records.py holds the two side by side, and the Fake
event log decodes every record it is given with the real codec, so every other gateway test
checks the bytes too.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from datetime import UTC, datetime

import orjson

from hookrun.events import TriggerLaunched
from hookrun.events.codec import Record, envelope


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
) -> Record:
    """The record of a ``TriggerLaunched`` with these fields, as ``encode`` would write it.

    ``headers`` and ``query`` are stored as given (already redacted, header names lowercased);
    the content type is the ``content-type`` header's value, as ``recorded_request`` keeps it.
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
        }
    )
    key = run_id.encode()
    headers = envelope(
        TriggerLaunched, event_id=event_id, source=source, occurred_at=datetime.now(UTC), key=key
    )
    return Record(TriggerLaunched.topic, key, value, headers)
