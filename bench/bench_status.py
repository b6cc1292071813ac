"""Status rows: projection rebuild events/s vs a raw aiokafka consume; run info queries/s vs a no-op."""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path

# Standalone runs (`python bench/bench_status.py`) need the repo root for `bench.` and `tests.`.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from bench import namespaces
from bench.loadgen import build_request, versus
from bench.noop_app import noop_process
from hookrun.dev.kafka_net import free_port
from hookrun.dev.procs import ServiceProcess
from hookrun.events import RunStatus, encode, topics
from hookrun.events.kafka import consumer_settings, ensure_topics, partitions_of, producer_settings
from hookrun.status.config import Settings
from hookrun.status.rebuild import rebuild
from tests.status.factories import CONFIG, launched, run_events

CONCURRENCY = 32
#: Raw consumes and rebuilds, taken in turn (raw, rebuild, rebuild, raw, ...). One of each, one
#: after the other, gave ratios from 0.38 to 0.53 in six runs on this shared machine, mostly
#: because the raw consume swung between 64,000 and 94,000 events/s.
REBUILD_ROUNDS = 4


async def _publish(bootstrap: str, namespace: str, runs: int) -> tuple[int, str]:
    """Publish ``runs`` realistic runs (launch, start, execution, action, finish, delivery)."""
    producer = AIOKafkaProducer(**producer_settings(bootstrap, "bench"))
    await producer.start()
    count = 0
    run_id = ""
    try:
        futures = []
        for i in range(runs):
            launch = launched("tok", body=b'{"batch_size": 32, "id": %d}' % i)
            run_id = launch.run_id
            for event in (launch, *run_events(launch, [RunStatus.SUCCESS], deliveries=1)):
                r = encode(event)
                futures.append(
                    await producer.send(
                        topics.named(r.topic, namespace), r.value, key=r.key, headers=r.headers
                    )
                )
                count += 1
            if len(futures) > 5000:
                await asyncio.gather(*futures)
                futures.clear()
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return count, run_id


async def _raw_consume_seconds(bootstrap: str, topic: str, total: int) -> float:
    consumer = AIOKafkaConsumer(**consumer_settings(bootstrap, "bench", group=None))
    await consumer.start()
    try:
        parts = await partitions_of(consumer, topic)
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        seen = 0
        started = time.perf_counter()
        while seen < total:
            batches = await consumer.getmany(timeout_ms=200, max_records=5000)
            for records in batches.values():
                for record in records:
                    seen += 1
                    orjson.loads(record.value)  # a consumer that at least parses what it reads
        return time.perf_counter() - started
    finally:
        await consumer.stop()


async def _rebuild_seconds(settings: Settings) -> float:
    started = time.perf_counter()
    await rebuild(settings)
    return time.perf_counter() - started


async def _rebuild_versus_raw(
    bootstrap: str, settings: Settings, total: int
) -> tuple[list[float], list[float]]:
    """Seconds of each rebuild and of each raw consume of the same topic, taken in turn.

    Each rebuild replays every record into a fresh store and swaps it in, as the command does.
    """
    runs_topic = topics.named(topics.RUNS, settings.hookrun_namespace)
    rebuilds: list[float] = []
    raws: list[float] = []
    for i in range(REBUILD_ROUNDS):
        for which in ("raw", "rebuild") if i % 2 == 0 else ("rebuild", "raw"):
            if which == "raw":
                raws.append(await _raw_consume_seconds(bootstrap, runs_topic, total))
            else:
                rebuilds.append(await _rebuild_seconds(settings))
    return rebuilds, raws


async def run(bootstrap: str, seconds: float) -> list[dict[str, object]]:
    """Measure and return the status rows."""
    namespace = namespaces.new()
    await ensure_topics(bootstrap, namespace=namespace)
    tmp = Path(tempfile.mkdtemp(prefix="hookrun-bench-status-"))
    runs = int(max(2000, 1500 * seconds))
    total, last_run = await _publish(bootstrap, namespace, runs)
    db = tmp / "status.db"
    settings = Settings(
        kafka_bootstrap_servers=bootstrap,
        hookrun_namespace=namespace,
        hookrun_database_url=f"sqlite:///{db}",
        log_level="WARNING",
    )
    rebuilds, raws = await _rebuild_versus_raw(bootstrap, settings, total)
    # Rates over all rounds joined (total records / total seconds), as versus() does.
    rebuild_rate = total * len(rebuilds) / sum(rebuilds)
    raw = total * len(raws) / sum(raws)

    config = tmp / "bench.yaml"
    config.write_text(CONFIG)
    port = free_port()
    status = ServiceProcess(
        "bench-status",
        "hookrun.status",
        {
            "HOOKRUN_CONFIG": str(config),
            "HOOKRUN_STATUS_PORT": str(port),
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "HOOKRUN_NAMESPACE": namespace,
            "HOOKRUN_DATABASE_URL": f"sqlite:///{db}",
            "LOG_LEVEL": "WARNING",
        },
        tmp,
        health_url=f"http://127.0.0.1:{port}/healthz",
    )
    noop, noop_port = noop_process(tmp)
    body = orjson.dumps({"run_id": last_run})
    headers = {"X-Token": "tok", "Content-Type": "application/json"}
    info_req = build_request("127.0.0.1", port, "/api/v0/launch/tok/run/", body, headers)
    noop_req = build_request("127.0.0.1", noop_port, "/noop", body, headers)
    try:
        noop.start(wait_s=30)
        status.start(wait_s=60)
        info, base = await versus(
            port, info_req, noop_port, noop_req, concurrency=CONCURRENCY, seconds=seconds
        )
        if set(info.statuses) != {200}:
            raise RuntimeError(f"run info answered {dict(info.statuses)}:\n{status.tail()}")
    finally:
        status.stop()
        noop.stop()
    return [
        {
            "name": "status: projection rebuild (SQLite)",
            "value": rebuild_rate,
            "unit": "events/s",
            "baseline_name": "raw aiokafka consume + JSON parse of the same topic",
            "baseline_value": raw,
            "goal": ">= 40% of baseline and >= 20000 events/s",
            "ok": rebuild_rate >= 0.4 * raw and rebuild_rate >= 20_000,
            "events": total,
            "rounds": [
                {"rebuild_events_per_s": total / a, "raw_events_per_s": total / b}
                for a, b in zip(rebuilds, raws, strict=True)
            ],
        },
        {
            "name": "status: run info queries (POST, static secret, SQLite)",
            "value": info.rate,
            "unit": "req/s",
            "baseline_name": "no-op FastAPI POST, same uvicorn settings",
            "baseline_value": base.rate,
            "goal": ">= 70% of baseline",
            "ok": info.rate >= 0.7 * base.rate,
        },
        {
            "name": "status: run info p99 at full load",
            "value": info.pct(99),
            "unit": "ms",
            "baseline_name": "no-op FastAPI POST p99 at full load",
            "baseline_value": base.pct(99),
            "goal": "reported",
        },
    ]


if __name__ == "__main__":
    import os

    rows = asyncio.run(
        run(
            os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"),
            float(sys.argv[1]) if len(sys.argv) > 1 else 5.0,
        )
    )
    for row in rows:
        print(orjson.dumps(row).decode())
