"""Writes the event JSON Schemas, docs/asyncapi.yaml and docs/events.md from the event classes.

Run ``python -m hookrun.dev.eventdocs`` after changing an event; ``--check`` fails when the
committed files differ from what the classes say (the test suite runs the check).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml

from hookrun.events import registered, topics
from hookrun.events.base import Event
from hookrun.events.notification_schema import RUN_NOTIFICATION_SCHEMA, VERSION
from hookrun.events.schemas import json_schema

ROOT = Path(__file__).resolve().parents[4]
EVENTS_DIR = ROOT / "libs" / "events"

_CE_HEADERS = {
    "ce_specversion": "CloudEvents spec version, always `1.0`",
    "ce_id": "unique event id (consumers dedupe on it)",
    "ce_source": "producing service, `hookrun/<service>/<host>`",
    "ce_type": "the event type, e.g. `hookrun.run.finished`",
    "ce_time": "when it happened, RFC 3339 UTC",
    "ce_subject": "the aggregate id (same as the Kafka key)",
    "ce_dataschema": "`urn:hookrun:schema:<type>:v<N>`: the data's schema version",
    "content-type": "`application/json`",
}

#: The CloudEvents distributed-tracing extension: on every event of a run, so optional.
_TRACE_HEADERS = {
    "ce_traceparent": "the run's W3C `traceparent` (the launch's: the sender's, continued, or a "
    "new trace); the same on every event of the run",
    "ce_tracestate": "the run's W3C `tracestate`, when the sender sent one",
}

_TOPIC_DOC = {
    topics.RUNS: "Every event of one run. Key: the run id, so a run's events are ordered.",
    topics.TRIGGERS: "Trigger log entries that belong to no run (rejected, duplicate, filtered, rate-limited). Key: trigger id.",
    topics.SCHEDULES: "Each trigger schedule's firings, skips, pauses and resumes, compacted. "
    "Key: trigger id.",
    topics.SUBSCRIPTIONS: "Subscription state: disabled (410, failing) and enabled again, "
    "delivery health, and the subscriptions made through the admin API, compacted. Key: "
    "subscription id (`<subscription id>/health`, `<subscription id>/definition`).",
    topics.INBOUND_DELIVERIES: "Accepted provider delivery ids (redelivery dedupe), compacted. "
    "Key: `<trigger id>/<delivery id>`.",
    topics.PIPELINES: "Pipeline definitions (what copy_pipeline copies), compacted. Key: pipeline id.",
    topics.CONFIGS: "Every config version a service loaded, as written (`${env:}` unresolved), "
    "compacted. Key: config version.",
}


def example_of(cls: type[Event]) -> dict[str, Any]:
    """Return the golden example data of ``cls`` (libs/events/examples/<type>/v<N>.json)."""
    path = EVENTS_DIR / "examples" / cls.type / f"v{cls.version}.json"
    return json.loads(path.read_text())


def generate() -> dict[Path, str]:
    """Return every generated file's path and text."""
    out: dict[Path, str] = {}
    types = registered()
    for cls in types.values():
        path = EVENTS_DIR / "schemas" / cls.type / f"v{cls.version}.json"
        out[path] = json.dumps(json_schema(cls), indent=2, sort_keys=False) + "\n"
    # The completion webhook body is no event but is contract too (docs/notifier.md, Payload);
    # the files of its older versions stay as they were published.
    out[EVENTS_DIR / "schemas" / "run-notification" / f"v{VERSION}.json"] = (
        json.dumps(RUN_NOTIFICATION_SCHEMA, indent=2) + "\n"
    )
    out[ROOT / "docs" / "asyncapi.yaml"] = _asyncapi(types)
    out[ROOT / "docs" / "events.md"] = _markdown(types)
    return out


def _asyncapi(types: dict[str, type[Event]]) -> str:
    messages: dict[str, Any] = {}
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    headers_schema = {
        "type": "object",
        "required": list(_CE_HEADERS),
        "properties": {
            name: {"type": "string", "description": doc}
            for name, doc in {**_CE_HEADERS, **_TRACE_HEADERS}.items()
        },
    }
    for cls in types.values():
        name = cls.__name__
        schema = json_schema(cls)
        schema.pop("$schema", None)
        messages[name] = {
            "name": cls.type,
            "title": name,
            "summary": schema.get("description", ""),
            "contentType": "application/json",
            "headers": {"$ref": "#/components/schemas/CloudEventHeaders"},
            "payload": schema,
            "bindings": {
                "kafka": {"key": {"type": "string", "description": f"the {cls.key_field}"}}
            },
            "examples": [{"name": f"v{cls.version}", "payload": example_of(cls)}],
            "x-producers": list(cls.producers),
            "x-consumers": list(cls.consumers),
        }
    for topic in _TOPIC_DOC:
        cid = topic.replace("hookrun.", "").replace("-", "_")
        names = [c.__name__ for c in types.values() if c.topic == topic]
        channels[cid] = {
            "address": topic,
            "description": _TOPIC_DOC[topic],
            "messages": {n: {"$ref": f"#/components/messages/{n}"} for n in names},
        }
        operations[f"receive_{cid}"] = {
            "action": "receive",
            "channel": {"$ref": f"#/channels/{cid}"},
            "summary": f"Subscribe to {topic}.",
        }
    doc = {
        "asyncapi": "3.0.0",
        "info": {
            "title": "hookrun events",
            "version": "1.0.0",
            "description": "CloudEvents 1.0 in Kafka binary content mode. Generated by "
            "`python -m hookrun.dev.eventdocs` from libs/events; do not edit by hand.",
        },
        "defaultContentType": "application/json",
        "servers": {"local": {"host": "127.0.0.1:9092", "protocol": "kafka"}},
        "channels": channels,
        "operations": operations,
        "components": {"schemas": {"CloudEventHeaders": headers_schema}, "messages": messages},
    }
    return yaml.safe_dump(doc, sort_keys=False, width=100, allow_unicode=True)


def _markdown(types: dict[str, type[Event]]) -> str:
    lines = [
        "# hookrun events",
        "",
        "<!-- Generated by `python -m hookrun.dev.eventdocs` from libs/events; do not edit by hand. -->",
        "",
        "Every state change in hookrun is an event on Kafka, a CloudEvent 1.0 in **binary content",
        "mode**: the envelope travels in Kafka headers, the value is the event data as JSON. The",
        "machine-readable description is [asyncapi.yaml](asyncapi.yaml); each type's JSON Schema is",
        "in `libs/events/schemas/<type>/v<N>.json` and a golden example in",
        "`libs/events/examples/<type>/v<N>.json`.",
        "",
        "## Headers",
        "",
        "| header | meaning |",
        "| --- | --- |",
        *[f"| `{h}` | {d} |" for h, d in _CE_HEADERS.items()],
        *[f"| `{h}` | {d} (optional) |" for h, d in _TRACE_HEADERS.items()],
        "",
        "## Topics",
        "",
        "| topic | what is on it |",
        "| --- | --- |",
        *[f"| `{t}` | {d} |" for t, d in _TOPIC_DOC.items()],
        "| `<topic>.dlq` | Records that could not be decoded, with `dlq_reason`, `dlq_topic`, "
        "`dlq_partition`, `dlq_offset` headers added. |",
        "",
        "## Who produces and who consumes each type",
        "",
        "Recorded in the registry (`@register(..., producers=..., consumers=...)`); each consuming",
        "service's `EventMap` handles exactly these and ignores the other types of its topics,",
        "which `tests/events/test_event_maps.py` checks.",
        "",
        "| type | topic | produced by | consumed by |",
        "| --- | --- | --- | --- |",
        *[
            f"| `{c.type}` | `{c.topic}` | {', '.join(c.producers)} | "
            f"{', '.join(c.consumers) or '-'} |"
            for c in types.values()
        ],
        "",
        "## Versioning",
        "",
        "Adding an optional field keeps the version. A rename, a removal or a changed meaning bumps",
        "the version (`ce_dataschema` ends in `:v2`) and adds an upcaster in",
        "`hookrun.events.upcasters`, so readers always see the newest shape. Consumers log and",
        "skip types they do not know, and send records they cannot decode to `<topic>.dlq`.",
        "",
        "## Types",
        "",
    ]
    for cls in types.values():
        schema = json_schema(cls)
        required = set(schema.get("required", []))
        lines += [
            f"### `{cls.type}` ({cls.__name__}, v{cls.version})",
            "",
            schema.get("description", ""),
            "",
            f"Topic `{cls.topic}`, key: {cls.key_field}. Produced by "
            f"{', '.join(cls.producers)}; consumed by {', '.join(cls.consumers) or 'no service'}.",
            "",
            "| field | type | required |",
            "| --- | --- | --- |",
        ]
        for field, spec in schema.get("properties", {}).items():
            lines.append(f"| `{field}` | {_type_of(spec)} | {'yes' if field in required else ''} |")
        lines += ["", "```json", json.dumps(example_of(cls), indent=2), "```", ""]
    return "\n".join(lines)


def _type_of(spec: dict[str, Any]) -> str:
    if "$ref" in spec:
        return spec["$ref"].rsplit("/", 1)[-1]
    if "anyOf" in spec:
        return " or ".join(_type_of(s) for s in spec["anyOf"])
    if "enum" in spec:
        return " / ".join(f"`{v}`" for v in spec["enum"])
    if "const" in spec:
        return f"`{spec['const']}`"
    kind = spec.get("type", "any")
    if kind == "array":
        return f"list of {_type_of(spec.get('items', {}))}"
    return str(kind)


def main(argv: list[str] | None = None) -> int:
    """Write (or with --check, compare) the generated files; return the exit code."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--check", action="store_true", help="fail if a generated file is out of date"
    )
    args = parser.parse_args(argv)
    stale = []
    for path, text in generate().items():
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(path)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    if stale:
        print("out of date (run python -m hookrun.dev.eventdocs):", *map(str, stale), sep="\n  ")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
