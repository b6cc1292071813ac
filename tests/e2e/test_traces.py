"""Traces of the whole system: one signed launch with the sender's ``traceparent`` is one trace
across gateway, runner, status and notifier (spans exported over OTLP/HTTP to a receiver the
test runs), every event of the run carries it on Kafka, and so does the completion webhook."""

from __future__ import annotations

import asyncio
import functools
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer

from hookrun.dev.otlp import ExportedSpan, OtlpReceiver
from hookrun.dev.pytest_kafka import new_namespace
from hookrun.events import topics
from hookrun.events.kafka import consumer_settings, partitions_of
from tests.e2e.support import System, github_headers, run_id_of, wait_for

pytestmark = pytest.mark.e2e

TRACE_ID = os.urandom(16).hex()
SENDER_SPAN = os.urandom(8).hex()
TRACEPARENT = f"00-{TRACE_ID}-{SENDER_SPAN}-01"
TRACESTATE = "sender=e2e,other=1"
SERVICES = ("hookrun-gateway", "hookrun-runner", "hookrun-status", "hookrun-notifier")


@pytest.fixture(scope="module")
def otlp() -> Iterator[OtlpReceiver]:
    receiver = OtlpReceiver().start()
    try:
        yield receiver
    finally:
        receiver.stop()


@pytest.fixture(scope="module")
def system(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory, otlp: OtlpReceiver
) -> Iterator[System]:
    started = System(
        kafka_bootstrap,
        tmp_path_factory.mktemp("traced"),
        namespace=new_namespace("traces"),
        env={
            "OTEL_EXPORTER_OTLP_ENDPOINT": otlp.endpoint,
            # spans leave within a fifth of a second, not the SDK's default 5 s
            "OTEL_BSP_SCHEDULE_DELAY": "200",
            "LOG_FORMAT": "json",
        },
    )
    try:
        yield started.start()
    finally:
        started.stop()


@pytest.fixture(scope="module")
def run_id(system: System) -> str:
    """A run of gh-ok launched inside the sender's trace, through to its notification."""
    body = json.dumps({"n": 2}).encode()
    headers = {**github_headers(body), "traceparent": TRACEPARENT, "tracestate": TRACESTATE}
    run_id = run_id_of(system.launch("gh-ok", {"n": 2}, headers=headers))
    system.notification(run_id)
    return run_id


def spans_by_service(otlp: OtlpReceiver) -> dict[str, list[ExportedSpan]]:
    out: dict[str, list[ExportedSpan]] = {}
    for span in otlp.of_trace(TRACE_ID):
        out.setdefault(span.service, []).append(span)
    return out


def test_every_service_has_spans_in_the_senders_trace(
    system: System, run_id: str, otlp: OtlpReceiver
) -> None:
    # Each service exports on its own schedule: wait for the last span of each kind.
    wanted = {
        ("hookrun-gateway", "server"),
        ("hookrun-gateway", "producer"),
        ("hookrun-runner", "consumer"),
        ("hookrun-runner", "execute ok"),
        ("hookrun-runner", "run gh-ok"),
        ("hookrun-status", "consumer"),
        ("hookrun-notifier", "consumer"),
        ("hookrun-notifier", "client"),
    }

    def complete() -> dict[str, list[ExportedSpan]] | None:
        found = spans_by_service(otlp)
        seen = {(svc, s.kind) for svc, spans in found.items() for s in spans}
        seen |= {(svc, s.name) for svc, spans in found.items() for s in spans}
        return found if wanted <= seen else None

    by_service = wait_for(complete, 30, f"spans of {SERVICES} in trace {TRACE_ID}")
    assert set(by_service) == set(SERVICES)
    names = {service: {s.name for s in spans} for service, spans in by_service.items()}
    # the gateway's launch span is a child of the sender's span
    [launch] = [s for s in by_service["hookrun-gateway"] if s.kind == "server"]
    assert launch.name == "POST /api/v0/launch/{trigger_id}/"
    assert launch.parent_span_id == SENDER_SPAN
    assert launch.attributes["hookrun.trigger_id"] == "gh-ok"
    assert launch.attributes["http.response.status_code"] == 202
    # Kafka spans after the messaging conventions: the launch's append, every consumer's read
    runs_topic = topics.named(topics.RUNS, system.namespace)
    [send] = [s for s in by_service["hookrun-gateway"] if s.kind == "producer"]
    assert send.name == f"send {runs_topic}"
    assert send.parent_span_id == launch.span_id
    assert send.attributes["messaging.system"] == "kafka"
    assert send.attributes["messaging.destination.name"] == runs_topic
    assert send.attributes["messaging.kafka.message.key"] == run_id
    for service in ("hookrun-runner", "hookrun-status", "hookrun-notifier"):
        consumed = [s for s in by_service[service] if s.kind == "consumer"]
        assert consumed, f"{service} has no consumer span: {names[service]}"
        assert all(s.name == f"process {runs_topic}" for s in consumed)
        assert all(s.attributes["messaging.operation.type"] == "process" for s in consumed)
    # the runner's execution and run spans, the notifier's delivery
    [execution] = [s for s in by_service["hookrun-runner"] if s.name == "execute ok"]
    assert execution.attributes["hookrun.run_id"] == run_id
    assert execution.attributes["process.exit.code"] == 0
    assert "run gh-ok" in names["hookrun-runner"]
    [delivery] = [s for s in by_service["hookrun-notifier"] if s.kind == "client"]
    assert delivery.attributes["http.response.status_code"] == 200
    assert delivery.attributes["hookrun.run_id"] == run_id
    assert delivery.parent_span_id == launch.span_id


def test_the_completion_webhook_carries_a_traceparent_of_the_run(
    system: System, run_id: str, otlp: OtlpReceiver
) -> None:
    [request] = system.notifications(run_id)
    version, trace_id, parent, flags = request.headers["traceparent"].split("-")
    assert (version, trace_id, flags) == ("00", TRACE_ID, "01")
    assert request.headers["tracestate"] == TRACESTATE
    # its parent is the notifier's delivery span
    delivery = wait_for(
        lambda: [s for s in otlp.of_trace(TRACE_ID) if s.kind == "client"], 30, "delivery span"
    )
    assert parent == delivery[0].span_id


def test_every_event_of_the_run_on_kafka_carries_the_trace(system: System, run_id: str) -> None:
    wanted = {
        "hookrun.trigger.launched",
        "hookrun.run.started",
        "hookrun.execution.created",
        "hookrun.execution.started",
        "hookrun.execution.finished",
        "hookrun.action.completed",
        "hookrun.run.finished",
        "hookrun.delivery.attempted",
    }

    def events() -> list[dict[str, Any]] | None:
        found = asyncio.run(_events_of(system, run_id))
        return found if wanted <= {e["ce_type"] for e in found} else None

    found = wait_for(events, 30, f"the events of {run_id}")
    for headers in found:
        assert headers["ce_traceparent"].split("-")[1] == TRACE_ID, headers
        assert headers["ce_tracestate"] == TRACESTATE, headers
    # every service continues the launch's context: the parent is the gateway's launch span
    assert len({h["ce_traceparent"] for h in found}) == 1


async def _events_of(system: System, run_id: str) -> list[dict[str, Any]]:
    bootstrap = system.procs[0].env["KAFKA_BOOTSTRAP_SERVERS"]
    consumer = AIOKafkaConsumer(**consumer_settings(bootstrap, "e2e", group=None))
    await consumer.start()
    try:
        parts = await partitions_of(consumer, topics.named(topics.RUNS, system.namespace))
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        ends = await consumer.end_offsets(parts)
        out = []
        while [tp for tp, end in ends.items() if await consumer.position(tp) < end]:
            batches = await consumer.getmany(timeout_ms=1000)
            for records in batches.values():
                for record in records:
                    if record.key == run_id.encode():
                        out.append({name: value.decode() for name, value in record.headers})
        return out
    finally:
        await consumer.stop()


def test_json_log_lines_about_the_run_carry_its_trace_id(system: System, run_id: str) -> None:
    for service in ("gateway", "runner", "notifier"):
        proc = next(p for p in system.procs if p.name == service)
        about = wait_for(
            functools.partial(_lines_about, proc.log_path, run_id),
            30,
            f"{service}'s log lines about {run_id}",
        )
        assert {d.get("trace_id") for d in about} == {TRACE_ID}, about


def test_a_launch_with_a_delivery_id_appends_in_a_transaction_inside_its_trace(
    system: System, otlp: OtlpReceiver
) -> None:
    trace_id = os.urandom(16).hex()
    body = json.dumps({"n": 1}).encode()
    headers = {
        **github_headers(body, delivery=f"traces-{trace_id}"),
        "traceparent": f"00-{trace_id}-{os.urandom(8).hex()}-01",
    }
    run_id = run_id_of(system.launch("gh-ok", {"n": 1}, headers=headers))

    def exported() -> tuple[list[ExportedSpan], list[ExportedSpan]] | None:
        # The server span ends after the answer, so it may come in a later export than these.
        spans = otlp.of_trace(trace_id)
        sends = [s for s in spans if s.kind == "producer"][:2]
        servers = [s for s in spans if s.kind == "server"]
        return (sends, servers) if len(sends) == 2 and servers else None

    sends, servers = wait_for(exported, 30, "the server and producer spans of the launch")
    keys = {s.attributes["messaging.kafka.message.key"] for s in sends}
    assert run_id in keys  # TriggerLaunched, sent with its dedupe record in one transaction
    [launch] = servers
    assert all(s.parent_span_id == launch.span_id for s in sends)


def _lines_about(log: Path, run_id: str) -> list[dict[str, Any]]:
    lines = log.read_text().splitlines()
    return [d for d in map(json.loads, filter(None, lines)) if d.get("run_id") == run_id]
