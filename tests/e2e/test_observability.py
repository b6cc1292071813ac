"""Metrics and JSON logs of the whole system: a launch through to its notification moves every
service's counters, and every service writes one JSON object per line with the run's ids."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer
from prometheus_client.parser import text_string_to_metric_families

from hookrun.dev.pytest_kafka import new_namespace
from hookrun.events import topics
from hookrun.events.kafka import producer_settings
from tests.e2e.support import System, github_headers, run_id_of, wait_for

pytestmark = pytest.mark.e2e

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture(scope="module")
def system(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    started = System(
        kafka_bootstrap,
        tmp_path_factory.mktemp("observed"),
        namespace=new_namespace("obs"),
        env={"LOG_FORMAT": "json"},
    )
    try:
        yield started.start()
    finally:
        started.stop()


@pytest.fixture(scope="module")
def run_id(system: System) -> str:
    """A run of gh-ok through to its verified notification, a rejected launch beside it, and
    one record that no consumer can decode."""
    run_id = run_id_of(system.launch("gh-ok", {"n": 3}))
    system.notification(run_id)
    # A delivery id makes the launch a transaction: its commit marker ends the partition.
    body = json.dumps({"n": 4}).encode()
    headers = github_headers(body, delivery=f"obs-{uuid.uuid4()}")
    system.notification(run_id_of(system.launch("gh-ok", {"n": 4}, headers=headers)))
    assert (
        system.launch("gh-ok", {"n": 3}, headers={"X-Hub-Signature-256": "sha256=00"}).status_code
        == 400
    )
    assert system.launch("no-such-trigger", {}).status_code == 400
    asyncio.run(_append_poison(system))
    return run_id


async def _append_poison(system: System) -> None:
    bootstrap = system.procs[0].env["KAFKA_BOOTSTRAP_SERVERS"]
    producer = AIOKafkaProducer(**producer_settings(bootstrap, "e2e"))
    await producer.start()
    try:
        await producer.send_and_wait(
            topics.named(topics.RUNS, system.namespace),
            b'{"not": "a RunFinished"}',
            key=b"poison",
            headers=[("ce_type", b"hookrun.run.finished"), ("ce_id", b"poison-1")],
        )
    finally:
        await producer.stop()


def metrics_url(system: System, service: str) -> str:
    proc = next(p for p in system.procs if p.name == service)
    assert proc.health_url is not None
    return proc.health_url.removesuffix("/healthz") + "/metrics"


def scrape(url: str) -> Samples:
    response = httpx.get(url, timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels`` (0 if none)."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)


def names(samples: Samples) -> set[str]:
    return {name for name, _ in samples}


def test_the_gateway_counts_launches_by_trigger_and_outcome(system: System, run_id: str) -> None:
    samples = scrape(metrics_url(system, "gateway"))
    launches = "hookrun_launches_total"
    assert value(samples, launches, trigger="gh-ok", outcome="accepted") >= 1
    assert (
        value(samples, launches, trigger="gh-ok", outcome="rejected", reason="condition_failed")
        >= 1
    )
    # An unknown trigger's id is the sender's to choose: it never becomes a label.
    assert value(samples, launches, trigger="_unknown", reason="unknown_trigger") >= 1
    assert not any(("trigger", "no-such-trigger") in ls for _, ls in samples)
    assert value(samples, "hookrun_kafka_ack_seconds_count", kind="launch") >= 1


def test_the_runner_counts_the_run_its_execution_and_the_dead_letter(
    system: System, run_id: str
) -> None:
    def moved() -> Samples | None:
        samples = scrape(metrics_url(system, "runner"))
        return samples if value(samples, "hookrun_dead_lettered_records_total") >= 1 else None

    samples = wait_for(moved, 30, "the runner to dead-letter the poison record")
    assert value(samples, "hookrun_runs_finished_total", trigger="gh-ok", status="SUCCESS") >= 1
    assert value(samples, "hookrun_run_duration_seconds_count", status="SUCCESS") >= 1
    assert value(samples, "hookrun_executions_finished_total", status="SUCCESS") >= 1
    assert value(samples, "hookrun_execution_duration_seconds_count", status="SUCCESS") >= 1
    assert {"hookrun_executions_running", "hookrun_executions_queued"} <= names(samples)
    assert value(samples, "hookrun_consumer_records_total", group="runner") >= 2
    assert value(samples, "hookrun_kafka_ack_seconds_count", kind="publish") >= 1
    lag = [ls for n, ls in samples if n == "hookrun_consumer_lag" and ("group", "runner") in ls]
    assert len(lag) == 6  # one per partition of hookrun.runs
    assert value(samples, "hookrun_consumer_partitions", group="runner", state="live") == 6
    # Everything read, transaction markers included: no lag left.
    wait_for(
        lambda: value(scrape(metrics_url(system, "runner")), "hookrun_consumer_lag") == 0,
        10,
        "the runner's lag to reach 0",
    )


def test_the_notifier_counts_the_delivery(system: System, run_id: str) -> None:
    samples = scrape(metrics_url(system, "notifier"))
    attempts = "hookrun_delivery_attempts_total"
    assert value(samples, attempts, outcome="succeeded", status_class="2xx") >= 1
    assert value(samples, "hookrun_delivery_latency_seconds_count") >= 1
    assert value(samples, "hookrun_delivery_attempt_seconds_count") >= 1
    assert {"hookrun_delivery_retries_pending", "hookrun_deliveries_pending"} <= names(samples)
    assert value(samples, "hookrun_consumer_records_total", group="notifier") >= 1
    assert value(samples, "hookrun_kafka_ack_seconds_count", kind="publish") >= 1


def test_the_status_service_reports_its_projection(system: System, run_id: str) -> None:
    samples = scrape(metrics_url(system, "status"))
    assert value(samples, "hookrun_status_records_applied_total") >= 3
    assert value(samples, "hookrun_status_projection_delay_seconds_count") >= 1
    assert "hookrun_status_projection_lag" in names(samples)
    assert value(samples, "hookrun_consumer_records_total", group="status") >= 3


def json_lines(system: System, service: str) -> list[dict[str, Any]]:
    proc = next(p for p in system.procs if p.name == service)
    lines = [line for line in proc.log_path.read_text().splitlines() if line.strip()]
    assert lines, f"{service} logged nothing"
    docs = []
    for line in lines:
        doc = json.loads(line)  # every line is one JSON object
        assert {"time", "level", "service", "logger", "message"} <= set(doc), line
        assert doc["service"] == service
        docs.append(doc)
    return docs


@pytest.mark.parametrize("service", ["gateway", "runner", "notifier"])
def test_json_logs_carry_the_run_and_trigger_of_the_lines_about_it(
    system: System, run_id: str, service: str
) -> None:
    about = wait_for(
        lambda: [d for d in json_lines(system, service) if d.get("run_id") == run_id],
        10,
        f"{service}'s log line about {run_id}",
    )
    assert all(d["trigger_id"] == "gh-ok" for d in about)


def test_the_status_service_logs_json_too(system: System, run_id: str) -> None:
    assert json_lines(system, "status")
