"""The runner's handler table: which handlers each event it reads triggers, and its EventMap."""

from __future__ import annotations

from collections.abc import Callable

from hookrun.events import topics
from hookrun.events.base import Event
from hookrun.events.configs import ConfigRecorded
from hookrun.events.maps import EventMap
from hookrun.events.notifications import (
    DeliveryAttempted,
    DeliveryCanceled,
    DeliveryExhausted,
    RedeliveryRequested,
)
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
from hookrun.events.schedules import SCHEDULE_TYPES
from hookrun.runner.context import Context, Plan
from hookrun.runner.reconcile import reconcile
from hookrun.runner.state import RunState

#: A handler derives from a run's state what moves the run on: events to append, executions to
#: start and to stop. The consume loop runs it once per run and batch, after the batch's events
#: are applied to the run (see Runner.dispatch).
Handler = Callable[[RunState, Context], Plan]
Handlers = tuple[Handler, ...]

#: reconcile derives every next step from the state, so it serves every event that can move a
#: run on, and a takeover or an expired lease as well.
RECONCILE: Handlers = (reconcile,)

#: Which handlers each event triggers once it is applied to its run. A heartbeat only extends a
#: lease, which the lease sweeper looks at; a RunFinished ends the run.
HANDLERS: dict[type[Event], Handlers] = {
    TriggerLaunched: RECONCILE,
    RunStarted: RECONCILE,
    ExecutionCreated: RECONCILE,
    ExecutionStarted: RECONCILE,
    ExecutionHeartbeat: (),
    ExecutionFinished: RECONCILE,
    PipelineCreated: RECONCILE,
    PipelineNodeSkipped: RECONCILE,
    PipelineFinished: RECONCILE,
    RunCancelRequested: RECONCILE,
    ActionCompleted: RECONCILE,
    RunFinished: (),
}


#: PipelineDefined feeds the pipeline index that copy_pipeline looks sources up in,
#: ConfigRecorded the config versions runs are performed with, the schedule events the state
#: the scheduler fires from; deliveries are the notifier's business.
EVENTS = EventMap(
    "runner",
    frozenset({topics.RUNS, topics.PIPELINES, topics.CONFIGS, topics.SCHEDULES}),
    {
        **HANDLERS,
        PipelineDefined: "PipelineIndex.remember",
        ConfigRecorded: "KafkaConfigStore",
        **dict.fromkeys(SCHEDULE_TYPES, "Scheduler.apply"),
    },
    frozenset({DeliveryAttempted, DeliveryCanceled, DeliveryExhausted, RedeliveryRequested}),
)
