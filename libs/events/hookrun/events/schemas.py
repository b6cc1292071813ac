"""JSON Schemas of event data, derived from the event classes (the single source of truth)."""

from __future__ import annotations

from typing import Any

from hookrun.events.base import ENVELOPE_FIELDS, Event
from hookrun.events.codec import dataschema

DRAFT = "https://json-schema.org/draft/2020-12/schema"


def json_schema(cls: type[Event]) -> dict[str, Any]:
    """Return the JSON Schema (draft 2020-12) of ``cls``'s data, the value of its Kafka message.

    The envelope fields travel in the CloudEvents headers, so they are not part of the data.
    """
    schema = cls.model_json_schema(mode="serialization")
    props = schema.get("properties", {})
    for name in ENVELOPE_FIELDS:
        props.pop(name, None)
    schema["required"] = [r for r in schema.get("required", []) if r not in ENVELOPE_FIELDS]
    doc = (cls.__doc__ or "").strip().split("\n\n")[0].replace("\n", " ")
    return {
        "$schema": DRAFT,
        "$id": dataschema(cls.type, cls.version),
        "title": cls.type,
        "description": " ".join(doc.split()),
        **{k: v for k, v in schema.items() if k not in ("title", "description")},
    }
