"""The runner's metrics port and what its metrics count."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY

from hookrun.events.base import utcnow
from hookrun.events.runs import ExecutionFinished, RunStatus
from hookrun.runner import metrics
from hookrun.runner.config import Settings


@pytest.mark.parametrize(
    ("env", "port"),
    [
        ({}, 0),
        ({"HOOKRUN_METRICS_PORT": "9101"}, 9101),
        ({"HOOKRUN_RUNNER_HEALTH_PORT": "9102"}, 9102),
        # One environment for the runner and the notifier: the service's own name wins.
        ({"HOOKRUN_METRICS_PORT": "9101", "HOOKRUN_RUNNER_HEALTH_PORT": "9102"}, 9102),
    ],
)
def test_the_metrics_port_and_its_older_name(monkeypatch, env, port):
    for name in ("HOOKRUN_METRICS_PORT", "HOOKRUN_RUNNER_HEALTH_PORT"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert Settings().hookrun_metrics_port == port


def test_finished_executions_are_counted_with_their_duration():
    def count(name: str) -> float:
        return REGISTRY.get_sample_value(name, {"status": "TIMED_OUT"}) or 0.0

    before = (
        count("hookrun_executions_finished_total"),
        count("hookrun_execution_duration_seconds_count"),
        count("hookrun_execution_duration_seconds_sum"),
    )
    finished = ExecutionFinished(
        run_id="r-1",
        execution_id="e-1",
        status=RunStatus.TIMED_OUT,
        completed_at=utcnow(),
        duration_ms=1500,
    )
    metrics.executions_recorded([finished])
    after = (
        count("hookrun_executions_finished_total"),
        count("hookrun_execution_duration_seconds_count"),
        count("hookrun_execution_duration_seconds_sum"),
    )
    assert [a - b for a, b in zip(after, before, strict=True)] == [1, 1, 1.5]
