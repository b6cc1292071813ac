"""hookrun's events: types, registry, CloudEvents codec and topic names (the subscriber contract)."""

from hookrun.events import topics
from hookrun.events.base import Event, new_id, utcnow
from hookrun.events.codec import (
    InvalidEvent,
    Record,
    UnknownEventType,
    UnrecordableEvent,
    decode,
    encode,
    to_cloudevent,
)
from hookrun.events.configs import ConfigRecorded
from hookrun.events.notifications import (
    DeliveryAttempted,
    DeliveryExhausted,
    RedeliveryRequested,
    SubscriptionDisabled,
)
from hookrun.events.registry import register, registered
from hookrun.events.runs import (
    ActionCompleted,
    ErrorDetail,
    ExecutionCreated,
    ExecutionFinished,
    ExecutionHeartbeat,
    ExecutionStarted,
    ExecutionSummary,
    Invocation,
    LaunchRequest,
    PipelineCreated,
    PipelineFinished,
    PipelineNodeSkipped,
    RunCancelRequested,
    RunFinished,
    RunStarted,
    RunStatus,
    TriggerLaunched,
)
from hookrun.events.schedules import (
    ScheduleArmed,
    ScheduleFired,
    SchedulePaused,
    ScheduleResumed,
    ScheduleSkipped,
)
from hookrun.events.triggers import InboundDeliveryRecorded, TriggerLogged

__all__ = [
    "ActionCompleted",
    "ConfigRecorded",
    "DeliveryAttempted",
    "DeliveryExhausted",
    "ErrorDetail",
    "Event",
    "ExecutionCreated",
    "ExecutionFinished",
    "ExecutionHeartbeat",
    "ExecutionStarted",
    "ExecutionSummary",
    "InboundDeliveryRecorded",
    "InvalidEvent",
    "Invocation",
    "LaunchRequest",
    "PipelineCreated",
    "PipelineFinished",
    "PipelineNodeSkipped",
    "Record",
    "RedeliveryRequested",
    "RunCancelRequested",
    "RunFinished",
    "RunStarted",
    "RunStatus",
    "ScheduleArmed",
    "ScheduleFired",
    "SchedulePaused",
    "ScheduleResumed",
    "ScheduleSkipped",
    "SubscriptionDisabled",
    "TriggerLaunched",
    "TriggerLogged",
    "UnknownEventType",
    "UnrecordableEvent",
    "decode",
    "encode",
    "new_id",
    "register",
    "registered",
    "to_cloudevent",
    "topics",
    "utcnow",
]
