"""Realistic run event sequences for the status tests (the runner and notifier are not here yet)."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from typing import Any

from hookrun.events import (
    ActionCompleted,
    DeliveryAttempted,
    DeliveryCanceled,
    DeliveryExhausted,
    Event,
    ExecutionCreated,
    ExecutionFinished,
    ExecutionStarted,
    Invocation,
    LaunchRequest,
    PipelineCreated,
    PipelineFinished,
    RunFinished,
    RunStarted,
    RunStatus,
    TriggerLaunched,
    TriggerLogged,
    new_id,
)

#: A fixed moment, for events whose time does not matter to the test.
T0 = datetime(2025, 1, 1, tzinfo=UTC)

CONFIG = """
project: {id: p-1, slug: demo, name: Demo}
organization: {id: o-1, slug: acme, title: Acme}
environment: {id: e-1, slug: dev, type: DEVELOPMENT}
steps:
  - {name: noop, command: ["true"]}
pipelines:
  - name: Nightly
    nodes: [{name: a, step: noop}]
triggers:
  - id: tok
    title: Static token in a header
    conditions: [{type: static_secret, header: X-Token, secret: tok}]
    actions: [{action: run_execution, step: noop}]
  - id: gh
    title: GitHub
    conditions: [{preset: github, secret: gh-secret}]
    actions: [{action: run_execution, step: noop}]
  - id: sw
    title: Standard Webhooks
    conditions: [{type: standard_webhooks, secret: whsec_c3ctc2VjcmV0}]
    actions: [{action: run_execution, step: noop}]
  - id: other
    title: Another trigger
    conditions: [{type: static_secret, header: X-Token, secret: tok}]
    actions: [{action: run_execution, step: noop}]
  - id: disabled-one
    title: Disabled
    enabled: false
    conditions: []
    actions: [{action: run_execution, step: noop}]
"""


def launched(trigger_id: str = "tok", run_id: str | None = None, **kw: Any) -> TriggerLaunched:
    """A launch received now (or at ``occurred_at``), its run id a UUIDv7 of that time as the
    gateway makes it."""
    body = kw.pop("body", b'{"n": 1}')
    at = kw.pop("occurred_at", None) or datetime.now(UTC)
    return TriggerLaunched(
        run_id=run_id or new_id(at=at),
        occurred_at=at,
        trigger_id=trigger_id,
        config_version="v1",
        request=LaunchRequest(
            method="POST",
            path=f"/api/v0/launch/{trigger_id}/",
            headers={"content-type": "application/json"},
            content_type="application/json",
            body_b64=base64.b64encode(body).decode(),
        ),
        **kw,
    )


def run_events(
    launch: TriggerLaunched,
    outcomes: list[RunStatus],
    *,
    finish: bool = True,
    pipeline: bool = False,
    deliveries: int = 0,
) -> list[Event]:
    """A run with one run_execution action per outcome (and optionally a pipeline action),
    dated from its launch: it starts 100 ms after it was received and ends 3 s later."""
    run_id = launch.run_id
    t0 = launch.occurred_at + timedelta(milliseconds=100)
    n = len(outcomes) + int(pipeline)
    events: list[Event] = [
        RunStarted(
            run_id=run_id,
            trigger_id=launch.trigger_id,
            runner_id="r1",
            action_count=n,
            occurred_at=t0,
        )
    ]
    summaries = []
    for i, status in enumerate(outcomes):
        ex = f"{run_id}-x{i}"
        events += [
            ExecutionCreated(
                run_id=run_id, execution_id=ex, action_index=i, step="noop", params={"i": i}
            ),
            ExecutionStarted(
                run_id=run_id,
                execution_id=ex,
                runner_id="r1",
                pid=100 + i,
                lease_until=t0 + timedelta(minutes=1),
                occurred_at=t0,
            ),
            ExecutionFinished(
                run_id=run_id,
                execution_id=ex,
                status=status,
                exit_code=0 if status is RunStatus.SUCCESS else 1,
                started_at=t0,
                completed_at=t0 + timedelta(seconds=2),
                duration_ms=2000,
                stdout_tail=f"out {i}\n",
                stderr_tail="" if status is RunStatus.SUCCESS else "boom\n",
                occurred_at=t0 + timedelta(seconds=2),
            ),
            ActionCompleted(
                run_id=run_id,
                action_index=i,
                action="run_execution",
                status=status,
                result={"action": "run_execution", "execution_step": "noop", "execution_id": ex},
            ),
        ]
        summaries.append(status)
    if pipeline:
        i = len(outcomes)
        pid = f"{run_id}-p"
        events += [
            PipelineCreated(
                run_id=run_id,
                pipeline_id=pid,
                pipeline_name="Nightly",
                action_index=i,
                nodes={"a": "noop"},
            ),
            ExecutionCreated(
                run_id=run_id,
                execution_id=f"{pid}-a",
                action_index=i,
                step="noop",
                pipeline_id=pid,
                node="a",
            ),
            ExecutionFinished(
                run_id=run_id,
                execution_id=f"{pid}-a",
                status=RunStatus.SUCCESS,
                exit_code=0,
                started_at=t0 + timedelta(seconds=2),
                completed_at=t0 + timedelta(seconds=2, milliseconds=5),
                duration_ms=5,
            ),
            PipelineFinished(run_id=run_id, pipeline_id=pid, status=RunStatus.SUCCESS),
            ActionCompleted(
                run_id=run_id, action_index=i, action="run_pipeline", status=RunStatus.SUCCESS
            ),
        ]
        summaries.append(RunStatus.SUCCESS)
    if finish:
        ok = all(s is RunStatus.SUCCESS for s in summaries)
        events.append(
            RunFinished(
                run_id=run_id,
                trigger_id=launch.trigger_id,
                config_version="v1",
                status=RunStatus.SUCCESS if ok else RunStatus.FAILURE,
                started_at=t0,
                completed_at=t0 + timedelta(seconds=3),
                duration_ms=3000,
                execution_count=len(outcomes),
                invocation=Invocation(id=run_id, timestamp=launch.occurred_at),
                occurred_at=t0 + timedelta(seconds=3),
            )
        )
    for d in range(deliveries):
        mid = f"msg-{run_id}"
        events.append(
            DeliveryAttempted(
                run_id=run_id,
                message_id=mid,
                subscription_id="sub-1",
                url="https://hooks.example.com/runs",
                attempt=d + 1,
                outcome="failed",
                status_code=500,
                duration_ms=12,
                response_excerpt="oops",
                next_attempt_at=t0 + timedelta(seconds=8 + 5 * d) if d + 1 < deliveries else None,
                occurred_at=t0 + timedelta(seconds=3 + 5 * d),
            )
        )
    if deliveries:
        events.append(
            DeliveryExhausted(
                run_id=run_id,
                message_id=f"msg-{run_id}",
                subscription_id="sub-1",
                attempts=deliveries,
                last_error="500",
            )
        )
    return events


def canceled(
    run_id: str,
    n: int = 1,
    attempts: int = 0,
    reason: str = "the subscription was deleted",
    cause: str = "deleted",
) -> DeliveryCanceled:
    """The DeliveryCanceled of delivery ``msg-<n>`` to subscription ``sub-<n>``."""
    return DeliveryCanceled(
        run_id=run_id,
        message_id=f"msg-{n}",
        subscription_id=f"sub-{n}",
        url="https://hooks.example.com/runs",
        attempts=attempts,
        cause=cause,
        reason=reason,
    )


def rejected(
    trigger_id: str = "tok", reason: str = "conditions[0] (static_secret): mismatch"
) -> TriggerLogged:
    return TriggerLogged(
        trigger_id=trigger_id, outcome="rejected", reason=reason, status_code=400, method="POST"
    )
