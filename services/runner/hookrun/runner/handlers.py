"""The runner's handler table: what each event it reads triggers, and its EventMap."""

from __future__ import annotations

from collections.abc import Callable

from hookrun.events import topics
from hookrun.events.base import Event
from hookrun.events.maps import EventMap
from hookrun.events.notifications import DeliveryAttempted, DeliveryExhausted, RedeliveryRequested
from hookrun.events.runs import (
    ActionCompleted,
    ExecutionCreated,
    ExecutionFinished,
    ExecutionHeartbeat,
    ExecutionStarted,
    PipelineCreated,
    PipelineDefined,
    PipelineFinished,
    PipelineNodeSkipped,
    RunCancelRequested,
    RunFinished,
    RunStarted,
    TriggerLaunched,
)
from hookrun.runner.context import Context, Plan
from hookrun.runner.reconcile import reconcile
from hookrun.runner.state import RunState

#: Which handlers react to which event. Every run event may move its run on, so it reconciles
#: the run; a heartbeat only extends a lease, which the lease sweeper looks at.
HANDLERS: dict[type[Event], list[Callable[[RunState, Context], Plan]]] = {
    TriggerLaunched: [reconcile],
    RunStarted: [reconcile],
    ExecutionCreated: [reconcile],
    ExecutionStarted: [reconcile],
    ExecutionHeartbeat: [],
    ExecutionFinished: [reconcile],
    PipelineCreated: [reconcile],
    PipelineNodeSkipped: [reconcile],
    PipelineFinished: [reconcile],
    RunCancelRequested: [reconcile],
    ActionCompleted: [reconcile],
    RunFinished: [],
}


#: PipelineDefined feeds the pipeline index that copy_pipeline looks sources up in; deliveries
#: are the notifier's business.
EVENTS = EventMap(
    "runner",
    frozenset({topics.RUNS, topics.PIPELINES}),
    {**HANDLERS, PipelineDefined: "PipelineIndex.remember"},
    frozenset({DeliveryAttempted, DeliveryExhausted, RedeliveryRequested}),
)
