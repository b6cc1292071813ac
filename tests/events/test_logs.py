"""LOG_FORMAT: text for people, or one JSON object per line with the run's context."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from hookrun.events import logs


@pytest.fixture
def restored() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    for handler in root.handlers[:]:
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


def configured(format: logs.LogFormat, level: str = "INFO") -> io.StringIO:
    stream = io.StringIO()
    logs.configure("runner", level, format, stream=stream)
    return stream


class TestJson:
    def test_each_record_is_one_json_object_with_time_level_service_and_message(self, restored):
        stream = configured("json")
        logging.getLogger("hookrun.runner").info("run %s finished", "r-1")
        [line] = stream.getvalue().splitlines()
        doc = json.loads(line)
        assert doc["level"] == "INFO"
        assert doc["service"] == "runner"
        assert doc["logger"] == "hookrun.runner"
        assert doc["message"] == "run r-1 finished"
        assert doc["time"].endswith("Z") and len(doc["time"]) == len("2026-12-06T02:14:11.328Z")
        assert "run_id" not in doc and "trace_id" not in doc  # only where known

    def test_run_and_trigger_ids_passed_in_extra_become_fields(self, restored):
        stream = configured("json")
        logging.getLogger("x").warning(
            "done", extra={"run_id": "r-1", "trigger_id": "t-1", "trace_id": "ab" * 16}
        )
        doc = json.loads(stream.getvalue())
        assert (doc["run_id"], doc["trigger_id"], doc["trace_id"]) == ("r-1", "t-1", "ab" * 16)

    def test_other_extra_keys_stay_out(self, restored):
        # Whatever a library attaches to its records (a request, a config) is not copied.
        stream = configured("json")
        logging.getLogger("x").info("m", extra={"secret": "s3cret", "request": object()})
        assert "s3cret" not in stream.getvalue()
        assert set(json.loads(stream.getvalue())) == {
            "time",
            "level",
            "service",
            "logger",
            "message",
        }

    def test_a_traceback_and_a_multi_line_message_stay_on_one_line(self, restored):
        stream = configured("json")
        try:
            raise ValueError("boom")
        except ValueError:
            logging.getLogger("x").exception("two\nlines")
        [line] = stream.getvalue().splitlines()
        doc = json.loads(line)
        assert doc["message"] == "two\nlines"
        assert "ValueError: boom" in doc["exc_info"]


class TestText:
    def test_text_names_the_service_and_is_the_default(self, restored):
        stream = io.StringIO()
        logs.configure("notifier", stream=stream)
        logging.getLogger("hookrun.notifier").info("hello")
        assert stream.getvalue().rstrip().endswith(" INFO notifier hookrun.notifier: hello")

    def test_configure_replaces_the_handlers_and_sets_the_level(self, restored):
        first = configured("text")
        second = configured("json", "WARNING")
        logging.getLogger("x").info("dropped")
        logging.getLogger("x").warning("kept")
        assert first.getvalue() == ""
        assert json.loads(second.getvalue())["message"] == "kept"


@pytest.mark.parametrize(("name", "level"), [("info", 20), ("TRACE", 10), ("warning", 30)])
def test_level_names(name, level):
    assert logs.level_of(name) == level


def test_an_unknown_level_is_refused():
    with pytest.raises(ValueError, match="LOG_LEVEL"):
        logs.level_of("chatty")
