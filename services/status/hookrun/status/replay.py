"""The rebuild's record reader: a record's row changes straight from its JSON, without the event model.

A rebuild replays records that were validated when they were written, so building each one's
pydantic model again and formatting its datetimes back into text would be wasted work.
``applied`` reads the headers ``decode`` reads and hands the record's JSON as it is to its type's
row rule (``rules``), the one the live projection uses. The rule takes each value it stores only
in the form the event model would give it (``values``; a time already in the store's UTC text
form is kept as it is). A record in any other shape (an older schema version, a missing or
coerced field, a type in ``_DECODED``) gets ``None``, and the caller decodes and folds it like
the live projection does, so both paths store the same rows (tests/status/test_replay.py
compares them).

Not checked: fields the projection does not store (``RunFinished.invocation``, a launch's
request headers). The live projection dead-letters a record whose such field is malformed; a
rebuild would apply it. hookrun's encoder cannot write one.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from hookrun.events import (
    PipelineCreated,
    PipelineFinished,
    PipelineNodeSkipped,
    RedeliveryRequested,
    RunCancelRequested,
)
from hookrun.events.codec import dataschema
from hookrun.status.rules import HANDLERS, apply_rule
from hookrun.status.store import Applied
from hookrun.status.values import stored_ts

_FOLDED = (LookupError, TypeError, ValueError)
#: The headers ``encode`` writes, in its order.
_ENCODED = (
    "ce_specversion",
    "ce_id",
    "ce_source",
    "ce_type",
    "ce_time",
    "ce_subject",
    "ce_dataschema",
    "content-type",
)
#: Their names in the CloudEvent ``projection.cloudevent_json`` makes of the record.
_ENVELOPE = (*(name[3:] for name in _ENCODED[:-1]), "datacontenttype")
#: That CloudEvent for headers in the encoder's order whose values JSON needs no escapes for
#: (``orjson`` escapes only ``"``, ``\\`` and control characters): the bytes as they are.
_CLOUDEVENT = ("{" + ",".join(f'"{name}":"%s"' for name in _ENVELOPE) + ',"data":%s}').encode()
_ESCAPED = re.compile(rb'[\x00-\x1f"\\]')
_JSON = b"application/json"


def applied(topic: str, partition: int, record: Any) -> Applied | None:
    """The record's ``Applied``, exactly as decode + fold make it; None: take the full path."""
    value = record.value
    envelope = _encoder_envelope(record.headers, value) or _envelope(record.headers, value)
    if envelope is None:
        return None
    event_id, type_, time, cloudevent = envelope
    offset = record.offset
    try:
        data = orjson.loads(value)
        if type(data) is not dict:
            return None
        return apply_rule(
            type_, data, topic, partition, offset, event_id, stored_ts(time), cloudevent
        )
    except _FOLDED:
        return None


Envelope = tuple[str, str, str, str]


def _encoder_envelope(headers: Any, value: Any) -> Envelope | None:
    """(id, type, time, cloudevent) of a record with exactly the headers ``encode`` writes.

    For a type read here at its current schema, specversion 1.0 and JSON content; None for
    anything else (``_envelope`` then decides). Only the id, source, time and subject vary from
    record to record, so only those are checked for characters JSON would escape; the others
    are compared with the encoder's own values, which spares decoding and checking every header.
    """
    try:
        (
            (n0, spec),
            (n1, event_id),
            (n2, source),
            (n3, type_),
            (n4, time),
            (n5, subject),
            (n6, schema),
            (n7, ctype),
        ) = headers
        if (n0, n1, n2, n3, n4, n5, n6, n7) != _ENCODED or spec != b"1.0" or ctype != _JSON:
            return None
        known = _ENCODER.get((type_, schema))
        if known is None or _ESCAPED.search(event_id + source + time + subject) is not None:
            return None
        cloudevent = _CLOUDEVENT % (
            spec,
            event_id,
            source,
            type_,
            time,
            subject,
            schema,
            ctype,
            value,
        )
        return event_id.decode(), known, time.decode(), cloudevent.decode()
    except (TypeError, ValueError):  # not pairs, not bytes, not UTF-8
        return None


def _envelope(headers: Any, value: Any) -> Envelope | None:
    """(id, type, time, the record as ``cloudevent_json`` makes it) of a type read here.

    None if a header is null or not UTF-8 (``decode`` refuses those: it decodes every header),
    or if the record is not a CloudEvent 1.0 of a type read here at its current schema.
    """
    try:
        names, raw = zip(*headers, strict=True)
        if names == _ENCODED and _ESCAPED.search(b"".join(raw)) is None:
            # The encoder's headers: format the bytes, decode once (UTF-8 checked there).
            cloudevent = (_CLOUDEVENT % (*raw, value)).decode()
            doc: dict[str, str] = dict(zip(_ENVELOPE, (r.decode() for r in raw), strict=True))
        else:
            doc = {}
            ctype = "application/json"
            for name, text in zip(names, map(bytes.decode, raw), strict=True):
                if name[:3] == "ce_":
                    doc[name[3:]] = text
                elif name == "content-type":
                    ctype = text
            doc["datacontenttype"] = ctype
            cloudevent = (orjson.dumps(doc)[:-1] + b',"data":' + value + b"}").decode()
    except (AttributeError, TypeError, ValueError):
        return None
    get = doc.get
    type_, schema = get("type"), get("dataschema")
    if get("specversion") != "1.0" or type_ not in _READ or schema not in _READ[type_]:
        return None
    return get("id") or "", type_, get("time"), cloudevent  # type: ignore[return-value]


def _schemas(cls: Any) -> frozenset[str | None]:
    """The ``ce_dataschema`` values that mean the class's newest version (decode needs no upcast)."""
    current = dataschema(cls.type, cls.version)
    return frozenset({current, None, ""}) if cls.version == 1 else frozenset({current})


#: The types a rebuild decodes and folds as live: the rare ones, of pipelines and admin requests.
_DECODED = frozenset(
    {
        PipelineCreated,
        PipelineNodeSkipped,
        PipelineFinished,
        RunCancelRequested,
        RedeliveryRequested,
    }
)
#: The types it reads from their JSON, with the schemas it reads them at.
_READ: dict[str, frozenset[str | None]] = {
    cls.type: _schemas(cls) for cls in HANDLERS if cls not in _DECODED
}
#: (ce_type, ce_dataschema) as the encoder writes them -> type, for the types above.
_ENCODER: dict[tuple[bytes, bytes], str] = {
    (type_.encode(), schema.encode()): type_
    for type_, schemas in _READ.items()
    for schema in schemas
    if schema  # the encoder always writes one
}
