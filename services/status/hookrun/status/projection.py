"""The live projection's fold: a decoded event (and where it sits in the log) -> SQL row changes.

The row changes are its type's rule (``rules``) applied to the event's data; the rebuild applies
the same rules to records it reads without the event model (``replay``). Replaying an event is
harmless: inserts ignore conflicts and counters are recomputed from the rows, never incremented;
the store also skips records below the offset it has stored for their partition.
"""

from __future__ import annotations

import functools
from datetime import datetime
from typing import Any, NamedTuple, cast

import orjson
from pydantic import TypeAdapter

from hookrun.events import Event, topics
from hookrun.events.maps import EventMap
from hookrun.events.schedules import SCHEDULE_TYPES
from hookrun.events.subscriptions import SUBSCRIPTION_TYPES
from hookrun.status.rules import HANDLERS, apply_rule
from hookrun.status.statements import Op


class Position(NamedTuple):
    """Where a record sits in the log, and the record as a structured CloudEvent (JSON text)."""

    topic: str
    partition: int
    offset: int
    cloudevent: str


def ts(moment: datetime | None) -> str | None:
    """A timestamp as fixed-width UTC text, so text order is time order in both databases.

    Naive datetimes are taken as UTC. Formatted by hand rather than with ``strftime``: this
    runs for several fields of every event.
    """
    if moment is None:
        return None
    offset = moment.utcoffset()
    if offset:
        moment = moment - offset  # the same instant, its fields now read in UTC
    return "%04d-%02d-%02dT%02d:%02d:%02d.%06dZ" % (  # noqa: UP031 (%-format: faster than an f-string here)
        moment.year,
        moment.month,
        moment.day,
        moment.hour,
        moment.minute,
        moment.second,
        moment.microsecond,
    )


def cloudevent_json(value: bytes | None, headers: Any) -> str:
    """The record as a structured-mode CloudEvent, built without re-parsing the data.

    Called only for records that decoded, so ``value`` is a JSON object already and the
    headers are UTF-8.
    """
    doc: dict[str, str] = {}
    ctype = "application/json"
    for name, raw in headers or ():
        if name[:3] == "ce_":
            doc[name[3:]] = raw.decode() if type(raw) is bytes else _header_text(raw)
        elif name == "content-type":
            ctype = raw.decode() if type(raw) is bytes else _header_text(raw)
    doc["datacontenttype"] = ctype
    head = orjson.dumps(doc)
    return (head[:-1] + b',"data":' + (value or b"null") + b"}").decode()


def _header_text(raw: Any) -> str:
    return raw.decode() if isinstance(raw, bytes | bytearray) else str(raw)


class EventData(dict[str, Any]):
    """A decoded event's data in the form its rule reads: each field as the JSON of its record
    holds it, times as ``ts`` text.

    Texts, numbers and times are taken at once. Other fields (enums, containers, models) are
    serialised when a rule first reads them, so the ones no rule reads (a run's invocation, its
    execution summaries) never are.
    """

    __slots__ = ("_event",)

    def __init__(self, event: Event) -> None:
        super().__init__()
        self._event = event
        for name, value in vars(event).items():
            if type(value) in _PLAIN:
                self[name] = value
            elif isinstance(value, datetime):
                self[name] = ts(value)

    def __missing__(self, name: str) -> Any:
        event = self._event
        value = _json_form(type(event), name).dump_python(vars(event)[name], mode="json")
        self[name] = value
        return value

    def get(self, name: str, default: Any = None) -> Any:  # type: ignore[override]
        try:
            return self[name]
        except KeyError:
            return default


_PLAIN = frozenset({str, int, bool, type(None)})


@functools.cache
def _json_form(cls: type[Event], name: str) -> TypeAdapter[Any]:
    """Serialises the field ``name`` of ``cls`` to JSON values as the model does; KeyError: none."""
    return TypeAdapter(cast(Any, cls.model_fields[name].annotation))


def fold(event: Event, at: Position) -> list[Op]:
    """Return the row changes ``event`` causes; every event of a run is also kept raw."""
    cls = type(event)
    if cls not in HANDLERS:
        return []
    data = EventData(event)
    occurred = data["occurred_at"]
    applied = apply_rule(
        cls.type, data, at.topic, at.partition, at.offset, event.event_id, occurred, at.cloudevent
    )
    return cast(list[Op], applied.ops)


#: The schedule events are the schedules book's (routes: the admin API's schedules); the
#: subscriptions topic's are folded by app.py's table into SubscriptionStates.
EVENTS = EventMap(
    "status",
    frozenset({topics.RUNS, topics.TRIGGERS, topics.SCHEDULES, topics.SUBSCRIPTIONS}),
    {
        **HANDLERS,
        **dict.fromkeys(SCHEDULE_TYPES, "KafkaScheduleBook"),
        **dict.fromkeys(SUBSCRIPTION_TYPES, "SubscriptionStates"),
    },
)
