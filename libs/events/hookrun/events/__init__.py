"""hookrun's events: types, registry, CloudEvents codec and topic names (the subscriber contract)."""

from hookrun.events import topics
from hookrun.events.base import Event, new_id, utcnow
from hookrun.events.codec import (
    InvalidEvent,
    Record,
    UnknownEventType,
    decode,
    encode,
    to_cloudevent,
)
from hookrun.events.registry import register, registered
from hookrun.events.runs import (
    ActionCompleted,
    ErrorDetail,
    ExecutionSummary,
    Invocation,
    LaunchRequest,
    RunFinished,
    RunStatus,
    TriggerLaunched,
)
from hookrun.events.triggers import InboundDeliveryRecorded, TriggerLogged

__all__ = [
    "ActionCompleted",
    "ErrorDetail",
    "Event",
    "ExecutionSummary",
    "InboundDeliveryRecorded",
    "InvalidEvent",
    "Invocation",
    "LaunchRequest",
    "Record",
    "RunFinished",
    "RunStatus",
    "TriggerLaunched",
    "TriggerLogged",
    "UnknownEventType",
    "decode",
    "encode",
    "new_id",
    "register",
    "registered",
    "to_cloudevent",
    "topics",
    "utcnow",
]
