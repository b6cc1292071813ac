"""The runner's Prometheus metrics: runs and executions finished, their durations, the queue.

Counted where the runner's appends are acknowledged (:meth:`Runner.dispatch`), so a run or
execution counts once per runner that recorded its end; the consume loop's own metrics are in
:mod:`hookrun.events.metrics`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from prometheus_client import Counter, Gauge, Histogram

from hookrun.events.base import Event
from hookrun.events.metrics import KAFKA_ACK_SECONDS
from hookrun.events.runs import ExecutionFinished, RunFinished

log = logging.getLogger("hookrun.runner")

#: Seconds: a no-op execution takes milliseconds, a training step hours.
DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 14400)

RUNS_FINISHED = Counter(
    "hookrun_runs_finished",
    "Runs finished (RunFinished acknowledged by Kafka), by trigger and final status",
    ["trigger", "status"],
)
RUN_SECONDS = Histogram(
    "hookrun_run_duration_seconds",
    "From a run's start to its end, by final status",
    ["status"],
    buckets=DURATION_BUCKETS,
)
EXECUTIONS_FINISHED = Counter(
    "hookrun_executions_finished", "Executions finished, by status", ["status"]
)
EXECUTION_SECONDS = Histogram(
    "hookrun_execution_duration_seconds",
    "How long an execution's process ran, by status",
    ["status"],
    buckets=DURATION_BUCKETS,
)
SCHEDULE_DUE_TIMES = Counter(
    "hookrun_schedule_due_times",
    "Due times of trigger schedules recorded by their owner, by trigger and outcome"
    " (fired, or skipped past misfire_grace_s)",
    ["trigger", "outcome"],
)
#: The runner's appends (its executions' reports, its reconciles' events).
ACKED = KAFKA_ACK_SECONDS.labels("publish")
RUNNING = Gauge("hookrun_executions_running", "Executions whose process runs now")
QUEUED = Gauge(
    "hookrun_executions_queued", "Executions waiting for a slot (HOOKRUN_RUNNER_CONCURRENCY)"
)
RUNS_IN_PROGRESS = Gauge("hookrun_runs_in_progress", "Unfinished runs of the partitions held")


def watch(
    running: Callable[[], float], queued: Callable[[], float], runs: Callable[[], float]
) -> None:
    """Read the gauges from the runner of this session when scraped (nothing on the hot path)."""
    RUNNING.set_function(running)
    QUEUED.set_function(queued)
    RUNS_IN_PROGRESS.set_function(runs)


def executions_recorded(events: Iterable[Event]) -> None:
    """Count the ExecutionFinished among ``events``, which Kafka acknowledged."""
    for event in events:
        if isinstance(event, ExecutionFinished):
            status = event.status.value
            EXECUTIONS_FINISHED.labels(status).inc()
            if event.duration_ms is not None:
                EXECUTION_SECONDS.labels(status).observe(event.duration_ms / 1000)


def run_finished(finished: RunFinished, trace_id: str | None = None) -> None:
    """Count and log a run whose RunFinished Kafka acknowledged (``trace_id``: its trace's)."""
    status = finished.status.value
    RUNS_FINISHED.labels(finished.trigger_id, status).inc()
    RUN_SECONDS.labels(status).observe(finished.duration_ms / 1000)
    log.info(
        "run %s finished %s in %d ms",
        finished.run_id,
        status,
        finished.duration_ms,
        extra={"run_id": finished.run_id, "trigger_id": finished.trigger_id, "trace_id": trace_id},
    )
