"""The event registry, the CloudEvents codec, the schemas and the generated docs."""

import json
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import pytest

from hookrun.dev import eventdocs
from hookrun.events import (
    InvalidEvent,
    TriggerLaunched,
    UnknownEventType,
    decode,
    encode,
    registered,
)
from hookrun.events.codec import dataschema
from hookrun.events.registry import DuplicateEventType, register
from hookrun.events.schedules import scheduled_run_id
from hookrun.events.schemas import json_schema
from hookrun.events.upcasters import UPCASTERS
from hookrun.notifier.signing import message_id

TYPES = registered()
EXAMPLES = Path(__file__).parents[2] / "libs" / "events" / "examples"


def headers_for(type_: str, version: int = 1, **extra: bytes) -> list[tuple[str, bytes]]:
    base = {
        "ce_specversion": b"1.0",
        "ce_id": b"evt-1",
        "ce_source": b"test",
        "ce_type": type_.encode(),
        "ce_time": b"2026-11-23T18:00:00Z",
        "ce_dataschema": dataschema(type_, version).encode(),
    }
    base.update(extra)
    return list(base.items())


def example(type_: str, version: int = 1) -> dict:
    return json.loads((EXAMPLES / type_ / f"v{version}.json").read_text())


#: The fields that hold ids the code makes with new_id (UUIDv7).
NEW_IDS = {"run_id", "execution_id", "pipeline_id", "source_pipeline_id", "failed_execution_id"}


def fields(data: Any) -> Iterator[tuple[str, Any, dict[str, Any]]]:
    """Every (name, value, the object holding it) in a JSON document, nested ones too."""
    if isinstance(data, dict):
        for name, value in data.items():
            yield name, value, data
            yield from fields(value)
    elif isinstance(data, list):
        for item in data:
            yield from fields(item)


@pytest.mark.parametrize("type_", TYPES)
class TestEveryRegisteredType:
    def test_has_a_golden_example_that_decodes(self, type_):
        data = example(type_, TYPES[type_].version)
        event = decode(orjson.dumps(data), headers_for(type_, TYPES[type_].version))
        assert isinstance(event, TYPES[type_])
        assert event.event_id == "evt-1"

    def test_golden_example_matches_the_json_schema(self, type_):
        cls = TYPES[type_]
        jsonschema.validate(example(type_, cls.version), json_schema(cls))

    def test_round_trips_through_the_codec(self, type_):
        cls = TYPES[type_]
        event = cls.model_validate(example(type_, cls.version))
        record = encode(event)
        assert decode(record.value, record.headers) == event
        assert record.key == event.key.encode()
        assert record.topic == cls.topic

    def test_golden_example_ids_have_the_shape_the_code_gives_them(self, type_):
        # the examples are the docs' (docs/events.md, docs/asyncapi.yaml): a reader copies them
        data = example(type_, TYPES[type_].version)
        for name, value, holder in fields(data):
            if name == "run_id" and type_ == "hookrun.schedule.fired":
                due = datetime.fromisoformat(holder["due_at"])
                assert value == scheduled_run_id(holder["trigger_id"], due)
            elif name in NEW_IDS and isinstance(value, str):
                made = uuid.UUID(value)
                assert (made.version, made.variant) == (7, uuid.RFC_4122), (name, value)
                assert str(made) == value
            elif name == "message_id":
                assert value == message_id(holder["run_id"], holder["subscription_id"])

    def test_encoded_value_matches_the_json_schema(self, type_):
        cls = TYPES[type_]
        record = encode(cls.model_validate(example(type_, cls.version)))
        jsonschema.validate(orjson.loads(record.value), json_schema(cls))


def test_encoded_record_carries_the_cloudevents_binary_mode_headers():
    event = TriggerLaunched.model_validate(example("hookrun.trigger.launched"))
    headers = dict(encode(event).headers)
    assert headers["ce_specversion"] == b"1.0"
    assert headers["ce_type"] == b"hookrun.trigger.launched"
    assert headers["ce_id"] == event.event_id.encode()
    assert headers["ce_time"].endswith(b"Z")
    assert headers["content-type"] == b"application/json"
    # the envelope is in the headers, not in the data
    assert "event_id" not in orjson.loads(encode(event).value)


def test_unknown_type_is_reported_as_unknown_not_invalid():
    with pytest.raises(UnknownEventType):
        decode(b"{}", headers_for("hookrun.something.new"))


@pytest.mark.parametrize(
    ("value", "headers", "message"),
    [
        (b"{}", [("ce_type", b"hookrun.trigger.launched")], "not a CloudEvents 1.0 message"),
        (b"not json", headers_for("hookrun.trigger.launched"), "value is not JSON"),
        (b"[1]", headers_for("hookrun.trigger.launched"), "not a JSON object"),
        (b'{"run_id": "r"}', headers_for("hookrun.trigger.launched"), "trigger_id: Field required"),
        (b"{}", headers_for("hookrun.trigger.launched", version=9), "newer than this reader"),
    ],
)
def test_undecodable_records_raise_invalid_event_saying_why(value, headers, message):
    with pytest.raises(InvalidEvent, match=message):
        decode(value, headers)


def test_old_versions_are_upcast_to_the_newest_shape(monkeypatch):
    cls = TYPES["hookrun.trigger.logged"]
    monkeypatch.setattr(cls, "version", 2)
    old = example("hookrun.trigger.logged")
    old["why"] = old.pop("reason")  # v1 -> v2 renamed the field, in this test's story
    monkeypatch.setitem(
        UPCASTERS, ("hookrun.trigger.logged", 1), lambda d: {**d, "reason": d.pop("why")}
    )
    event = decode(orjson.dumps(old), headers_for("hookrun.trigger.logged", version=1))
    assert event.reason == "conditions[0] (hmac): signature mismatch"


def test_a_second_class_cannot_take_a_registered_name():
    with pytest.raises(DuplicateEventType):

        @register("hookrun.run.finished", version=1, topic="x", producers=("runner",))
        class Impostor(TriggerLaunched):
            pass


def test_generated_schemas_asyncapi_and_events_md_are_up_to_date():
    assert eventdocs.main(["--check"]) == 0, "run: python -m hookrun.dev.eventdocs"
