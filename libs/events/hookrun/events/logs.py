"""Logging of every service: text for people (the default), or one JSON object per line.

``LOG_FORMAT=json`` makes each record one line with ``time``, ``level``, ``service``,
``logger`` and ``message``, plus the context a log call passes in ``extra`` (``run_id``,
``trigger_id``, ``execution_id``, ``subscription_id``, ``trace_id``) when it knows it (the
trace id also from the trace the logging task works on), and
``exc_info`` for an exception. Only those named keys are copied from a record, so whatever
else a library attaches to its records (a request, a config) never reaches the log.
"""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
from typing import IO, Any, Literal

import orjson

from hookrun.events import tracing

LogFormat = Literal["text", "json"]

#: The ``extra`` keys a JSON line carries when a log call passes them. ``trace_id`` is also
#: filled from the trace the logging task works on (:func:`hookrun.events.tracing.working_on`).
CONTEXT_KEYS = ("run_id", "trigger_id", "execution_id", "subscription_id", "trace_id")

#: The text format: a service's lines say which service wrote them, as in `make run`'s logs.
TEXT_FORMAT = "%(asctime)s %(levelname)s {service} %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (a traceback is a string inside it)."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": _utc(record),
            "level": record.levelname,
            "service": self.service,
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = record.__dict__
        for key in CONTEXT_KEYS:
            value = fields.get(key)
            if value is not None:
                doc[key] = value
        if "trace_id" not in doc:
            trace_id = tracing.current_trace_id()
            if trace_id is not None:
                doc["trace_id"] = trace_id
        if record.exc_info:
            doc["exc_info"] = self.formatException(record.exc_info)
        if record.stack_info:
            doc["stack_info"] = self.formatStack(record.stack_info)
        return orjson.dumps(doc, default=str).decode()


def _utc(record: logging.LogRecord) -> str:
    """The record's time in UTC with milliseconds, as the events write it."""
    at = datetime.fromtimestamp(record.created, UTC)
    return f"{at:%Y-%m-%dT%H:%M:%S}.{int(record.msecs):03d}Z"


def level_of(level: str) -> int:
    """The logging level named by ``LOG_LEVEL`` (``TRACE`` is DEBUG with the Kafka client's)."""
    name = level.upper()
    if name == "TRACE":
        return logging.DEBUG
    found = logging.getLevelName(name)
    if not isinstance(found, int):
        raise ValueError(f"LOG_LEVEL={level!r} is not a logging level")
    return found


def configure(
    service: str,
    level: str = "INFO",
    format: LogFormat = "text",
    *,
    stream: IO[str] | None = None,
) -> None:
    """Send every log record of the process to ``stream`` (stderr) in ``format``, from ``level``.

    Replaces whatever handlers the root logger had, so calling it again reconfigures. Raises
    ValueError for an unknown level.
    """
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    if format == "json":
        handler.setFormatter(JsonFormatter(service))
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT.format(service=service)))
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(level_of(level))
