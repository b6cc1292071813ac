"""Gateway rows: accepted launches/s and latency, beside a no-op FastAPI endpoint and raw aiokafka."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import sys
import tempfile
import time
import uuid
from pathlib import Path

from aiokafka import AIOKafkaProducer

from bench import namespaces
from bench.loadgen import Result, build_request, open_loop, versus
from bench.noop_app import noop_process
from hookrun.dev.kafka_net import free_port
from hookrun.dev.procs import ServiceProcess
from hookrun.events import LaunchRequest, TriggerLaunched, encode, topics
from hookrun.events.kafka import ensure_topics, producer_settings

SECRET = "bench-secret"
BODY = b'{"batch_size": 32, "records": [' + b",".join(b'{"id": %d}' % i for i in range(20)) + b"]}"
CONFIG = """
project: {id: p-1, slug: bench, name: Bench}
organization: {id: o-1, slug: bench, title: Bench}
environment: {id: e-1, slug: bench, type: DEVELOPMENT}
steps:
  - {name: noop, command: ["true"]}
triggers:
  - id: bench
    title: Benchmark trigger
    conditions: [{type: hmac, header: X-Hub-Signature-256, secret: bench-secret, prefix: "sha256="}]
    actions: [{action: run_execution, step: noop}]
    response: {text: "Created run {run_id}"}
"""
CONCURRENCY = 32
#: Full-concurrency warm-up of each server before anything is measured, the same for both. The
#: broker may have just been started (``make bench`` runs these rows first): its JIT compiles
#: the produce path during the first seconds of load, which measured as up to 5x the broker
#: CPU per launch and a slower, noisier gateway.
WARM_UP_S = 3.0


def _signed_headers() -> dict[str, str]:
    sig = "sha256=" + hmac.new(SECRET.encode(), BODY, hashlib.sha256).hexdigest()
    return {"Content-Type": "application/json", "X-Hub-Signature-256": sig}


async def _raw_produce_rate(bootstrap: str, namespace: str, seconds: float) -> float:
    """Raw aiokafka, same settings and message as the gateway's, many sends in flight."""
    event = TriggerLaunched(
        run_id=str(uuid.uuid4()),
        trigger_id="bench",
        config_version="x",
        request=LaunchRequest(method="POST", path="/", body_b64="x" * (len(BODY) * 4 // 3)),
    )
    record = encode(event)
    producer = AIOKafkaProducer(**producer_settings(bootstrap, "bench"))
    await producer.start()
    topic = topics.named(topics.RUNS, namespace)
    sent = 0
    try:
        deadline = time.perf_counter() + seconds
        start = time.perf_counter()
        while time.perf_counter() < deadline:
            futures = [
                await producer.send(
                    topic, record.value, key=str(i).encode(), headers=record.headers
                )
                for i in range(CONCURRENCY)
            ]
            await asyncio.gather(*futures)
            sent += len(futures)
        return sent / (time.perf_counter() - start)
    finally:
        await producer.stop()


async def run(bootstrap: str, seconds: float) -> list[dict[str, object]]:
    """Measure and return the gateway rows."""
    namespace = namespaces.new()
    await ensure_topics(bootstrap, namespace=namespace)
    tmp = Path(tempfile.mkdtemp(prefix="hookrun-bench-"))
    config = tmp / "bench.yaml"
    config.write_text(CONFIG)
    gw_port = free_port()
    gateway = ServiceProcess(
        "bench-gateway",
        "hookrun.gateway",
        {
            "HOOKRUN_CONFIG": str(config),
            "HOOKRUN_PORT": str(gw_port),
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "HOOKRUN_NAMESPACE": namespace,
            "LOG_LEVEL": "WARNING",
        },
        tmp,
        health_url=f"http://127.0.0.1:{gw_port}/healthz",
    )
    noop, noop_port = noop_process(tmp)
    launch = build_request("127.0.0.1", gw_port, "/api/v0/launch/bench/", BODY, _signed_headers())
    noop_req = build_request("127.0.0.1", noop_port, "/noop", BODY, _signed_headers())
    try:
        noop.start(wait_s=30)
        gateway.start(wait_s=60)
        gw_max, base_max = await versus(
            gw_port,
            launch,
            noop_port,
            noop_req,
            concurrency=CONCURRENCY,
            seconds=seconds,
            warm_up_s=WARM_UP_S,
            pids=(gateway.pid, noop.pid),
        )
        _check(gw_max, 202, "gateway")
        half = max(gw_max.rate / 2, 10)
        gw_half = await open_loop("127.0.0.1", gw_port, launch, rate=half, seconds=seconds)
        base_half = await open_loop("127.0.0.1", noop_port, noop_req, rate=half, seconds=seconds)
        _check(gw_half, 202, "gateway")
        raw = await _raw_produce_rate(bootstrap, namespace, seconds)
    finally:
        gateway.stop()
        noop.stop()
    return [
        {
            "name": "gateway: accepted launches/s (HMAC, acks=all)",
            "value": gw_max.rate,
            "unit": "req/s",
            "baseline_name": "no-op FastAPI POST",
            "baseline_value": base_max.rate,
            "goal": ">= 70% of baseline",
            "ok": gw_max.rate >= 0.7 * base_max.rate,
        },
        {
            "name": f"gateway: p50 latency at half max ({half:.0f}/s)",
            "value": gw_half.pct(50),
            "unit": "ms",
            "baseline_name": "no-op FastAPI POST, same rate",
            "baseline_value": base_half.pct(50),
            "goal": "",
            "ok": None,
        },
        {
            "name": f"gateway: p99 latency at half max ({half:.0f}/s)",
            "value": gw_half.pct(99),
            "unit": "ms",
            "baseline_name": "no-op FastAPI POST, same rate",
            "baseline_value": base_half.pct(99),
            "goal": "<= 25 ms",
            "ok": gw_half.pct(99) <= 25,
        },
        {
            "name": "gateway: CPU per launch at max rate (gateway process)",
            "value": gw_max.server_cpu_us,
            "unit": "us",
            "baseline_name": "no-op FastAPI POST, CPU per request (its process)",
            "baseline_value": base_max.server_cpu_us,
            "goal": "",
            "ok": None,
        },
        {
            "name": "gateway: accepted launches/s vs raw produce",
            "value": gw_max.rate,
            "unit": "msg/s",
            "baseline_name": f"raw aiokafka produce (acks=all, idempotent, {CONCURRENCY} in flight)",
            "baseline_value": raw,
            "goal": "",
            "ok": None,
        },
    ]


def _check(result: Result, status: int, what: str) -> None:
    bad = {s: n for s, n in result.statuses.items() if s != status}
    if bad or result.errors:
        raise RuntimeError(f"{what}: unexpected answers {bad} / {result.errors} errors")


if __name__ == "__main__":
    from bench.run import main

    sys.exit(main(["--only", "gateway", *sys.argv[1:]]))
