"""Bounds on events: JSON depth, clipped texts, and events that cannot become records."""

from datetime import UTC, datetime

import pytest

from hookrun.events import ExecutionFinished, RunStatus, UnrecordableEvent, encode
from hookrun.events.codec import MAX_RECORD_BYTES
from hookrun.events.limits import MAX_TEXT_CHARS, clip, json_too_deep
from hookrun.events.runs import ErrorDetail, Invocation, RunFinished

NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


class TestJsonDepth:
    @pytest.mark.parametrize(
        ("raw", "too_deep"),
        [
            (nested(64), False),
            (nested(65), True),
            (b'{"a":' * 65 + b"1" + b"}" * 65, True),
            (b"[" + b"[]," * 10_000 + b"[]]", False),
            (b'["' + b"[" * 100 + b'"]', False),
            (b'["\\"' + b"{" * 100 + b'"]', False),
            (b"[" * 100, False),
            (nested(2000), False),
            (b"plain text [[[[", False),
            (b'{"a":[' * 32 + b"1" + b"]}" * 32, False),
            (b'{"a":[' * 32 + b"[]" + b"]}" * 32, True),
            (b'[{"a":' * 33 + b"1" + b"}]" * 33, True),
        ],
        ids=[
            "at-the-limit",
            "one-over",
            "objects",
            "wide-but-shallow",
            "brackets-in-a-string",
            "brackets-after-an-escaped-quote",
            "not-json",
            "deeper-than-any-json-parser-reads",
            "text",
            "objects-and-arrays-in-turn-at-the-limit",
            "objects-and-arrays-in-turn-one-over",
            "arrays-and-objects-in-turn-over",
        ],
    )
    def test_only_json_nested_past_the_limit_is_too_deep(self, raw, too_deep):
        assert json_too_deep(raw, 64) is too_deep


def test_a_long_text_is_clipped_and_says_how_much_was_cut():
    text = clip("x" * 10_000)
    assert len(text) == MAX_TEXT_CHARS
    assert text.endswith("... [1808 more characters]")
    assert clip("short") == "short"


def test_error_texts_of_events_are_clipped():
    finished = ExecutionFinished(
        run_id="r",
        execution_id="e",
        status=RunStatus.FAILURE,
        completed_at=NOW,
        error="e" * 100_000,
        stderr_tail="s" * 100_000,
    )
    assert len(finished.error or "") == MAX_TEXT_CHARS
    assert len(finished.stderr_tail) == MAX_TEXT_CHARS
    assert len(ErrorDetail(message="m" * 100_000).message) == MAX_TEXT_CHARS


def _run_finished(payload: object) -> RunFinished:
    return RunFinished(
        run_id="r",
        trigger_id="t",
        config_version="v",
        status=RunStatus.SUCCESS,
        started_at=NOW,
        completed_at=NOW,
        duration_ms=0,
        execution_count=0,
        invocation=Invocation(id="i", payload=payload, timestamp=NOW),
    )


def test_an_event_nested_too_deep_to_serialise_is_unrecordable():
    payload: list[object] = []
    for _ in range(300):
        payload = [payload]
    with pytest.raises(UnrecordableEvent, match="does not serialise"):
        encode(_run_finished(payload))


def test_an_event_over_the_message_size_is_unrecordable():
    with pytest.raises(UnrecordableEvent, match="bytes, over the"):
        encode(_run_finished("x" * MAX_RECORD_BYTES))
    assert encode(_run_finished("x" * 1000)).value
