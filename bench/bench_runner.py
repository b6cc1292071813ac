"""Runner benchmark: no-op runs per second and per-execution overhead, beside bare asyncio spawns."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer

from bench import namespaces
from bench.procstat import cpu_s
from hookrun.dev.kafka_net import free_port
from hookrun.dev.procs import ServiceProcess
from hookrun.events import topics
from hookrun.events.kafka import Publisher, ensure_topics, partitions_of, security_settings
from hookrun.events.runs import LaunchRequest, TriggerLaunched

CONFIG = """
project: {id: p-1, slug: bench, name: Bench}
organization: {id: o-1, slug: bench, title: Bench}
environment: {id: e-1, slug: dev, type: DEVELOPMENT}
steps:
  - {name: noop, command: ["true"]}
triggers:
  - {id: noop, title: noop, actions: [{action: run_execution, step: noop}]}
"""

CONCURRENCY = 8
#: The runner's own config version: a launch naming another one would be looked up first.
VERSION = hashlib.sha256(CONFIG.encode()).hexdigest()[:12]


def _launch() -> TriggerLaunched:
    return TriggerLaunched(
        run_id=str(uuid.uuid4()),
        trigger_id="noop",
        config_version=VERSION,
        request=LaunchRequest(method="POST", path="/", body_b64=base64.b64encode(b"{}").decode()),
    )


class _Watch:
    """Reads the runs topic from its current end; remembers when each run's events appeared.

    It reads the ``ce_type`` and ``ce_time`` headers and the key (the run id), never the value:
    decoding every event took 1-3 ms of CPU per run on the two cores the runner needs.
    """

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            **security_settings(),
            group_id=None,
            enable_auto_commit=False,
            fetch_max_wait_ms=5,
        )
        self.topic = topic
        #: (type, run id) -> the event's ce_time (when the producer says it happened)
        self.events: dict[tuple[str, str], datetime] = {}
        self.arrived: dict[tuple[str, str], float] = {}
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.consumer.start()
        parts = await partitions_of(self.consumer, self.topic)
        self.consumer.assign(parts)
        await self.consumer.seek_to_end(*parts)
        for tp in parts:
            await self.consumer.position(tp)
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        while True:
            batches = await self.consumer.getmany(timeout_ms=100, max_records=5000)
            now = time.perf_counter()
            for records in batches.values():
                for r in records:
                    headers = dict(r.headers)
                    key = (headers["ce_type"].decode(), r.key.decode())
                    if key not in self.arrived:
                        self.arrived[key] = now
                        self.events[key] = datetime.fromisoformat(headers["ce_time"].decode())

    async def wait(self, type_: str, run_ids: list[str], timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not all((type_, r) in self.events for r in run_ids):
            if time.monotonic() > deadline:
                missing = sum((type_, r) not in self.events for r in run_ids)
                raise TimeoutError(f"{missing} of {len(run_ids)} runs lack {type_}")
            await asyncio.sleep(0.002)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        await self.consumer.stop()


async def _bare_spawns(n: int) -> tuple[float, float]:
    """(spawns per second at CONCURRENCY, median seconds of one create_subprocess_exec)."""
    sem = asyncio.Semaphore(CONCURRENCY)

    async def one() -> float:
        async with sem:
            t0 = time.perf_counter()
            proc = await asyncio.create_subprocess_exec("true")
            spawned = time.perf_counter() - t0
            await proc.wait()
            return spawned

    start = time.perf_counter()
    times = await asyncio.gather(*(one() for _ in range(n)))
    rate = n / (time.perf_counter() - start)
    return rate, statistics.median(times)


@dataclass
class RunnerAlone:
    """A runner on its own namespace, warmed up, with a publisher of launches and a watch."""

    runner: ServiceProcess
    publisher: Publisher
    watch: _Watch


@contextlib.asynccontextmanager
async def runner_alone(bootstrap: str) -> AsyncIterator[RunnerAlone]:
    """Start a runner alone (default settings, a no-op step) and warm it up; stop it after."""
    namespace = namespaces.new()
    await ensure_topics(bootstrap, namespace=namespace)
    topic = topics.named(topics.RUNS, namespace)
    tmp = Path(tempfile.mkdtemp(prefix="hookrun-bench-runner-"))
    tmp.chmod(0o755)  # reachable by the execution user, so the runner's default isolation runs
    (tmp / "bench.yaml").write_text(CONFIG)
    port = free_port()
    runner = ServiceProcess(
        "bench-runner",
        "hookrun.runner",
        {
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "HOOKRUN_CONFIG": str(tmp / "bench.yaml"),
            "HOOKRUN_NAMESPACE": namespace,
            "HOOKRUN_DATA_DIR": str(tmp / "data"),
            "HOOKRUN_RUNNER_CONCURRENCY": str(CONCURRENCY),
            "HOOKRUN_RUNNER_HEALTH_PORT": str(port),
            "LOG_LEVEL": "WARNING",
        },
        tmp,
        health_url=f"http://127.0.0.1:{port}/healthz",
    )
    publisher = Publisher(bootstrap, "bench", namespace=namespace)
    watch = _Watch(bootstrap, topic)
    try:
        runner.start()
        runner.wait_healthy(60, ready_key="assigned")
        await publisher.start(wait=True)
        await watch.start()
        # warm-up: connections, imports, first spawn
        warm = [_launch() for _ in range(20)]
        await publisher.publish(warm)
        await watch.wait("hookrun.run.finished", [e.run_id for e in warm], 60)
        yield RunnerAlone(runner, publisher, watch)
    finally:
        await watch.stop()
        await publisher.stop()
        runner.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def noop_runs(seconds: float) -> int:
    """How many launches :func:`noop_max` is given for a measurement of about ``seconds``."""
    return max(200, int(seconds * 150))


async def noop_max(alone: RunnerAlone, n: int) -> tuple[float, float, float]:
    """(no-op runs/s, runner CPU ms per run, its executions' CPU ms per run) for N launches at once.

    The rate counts from the publish until the last run's RunFinished appeared.
    """
    launches = [_launch() for _ in range(n)]
    cpu0 = cpu_s(alone.runner.pid)
    t0 = time.perf_counter()
    await alone.publisher.publish(launches)
    await alone.watch.wait("hookrun.run.finished", [e.run_id for e in launches], 120 + n / 20)
    last = max(alone.watch.arrived[("hookrun.run.finished", e.run_id)] for e in launches)
    cpu1 = cpu_s(alone.runner.pid)
    own_ms, children_ms = ((b - a) / n * 1000 for a, b in zip(cpu0, cpu1, strict=True))
    return n / (last - t0), own_ms, children_ms


async def run(bootstrap: str, seconds: float) -> list[dict[str, Any]]:
    """Measure and return the runner rows."""
    n = noop_runs(seconds)
    async with runner_alone(bootstrap) as alone:
        # (2) overhead, one run at a time so no queue inflates it
        overhead = []
        for _ in range(30):
            event = _launch()
            await alone.publisher.publish([event])
            await alone.watch.wait("hookrun.execution.started", [event.run_id], 30)
            started_at = alone.watch.events[("hookrun.execution.started", event.run_id)]
            overhead.append((started_at - event.occurred_at).total_seconds())

        # (1) throughput: N launches at once, until N RunFinished
        rate, own_ms, children_ms = await noop_max(alone, n)

    bare_rate, bare_spawn = await _bare_spawns(n)
    return [
        {
            "name": "runner no-op runs/s",
            "value": rate,
            "unit": "runs/s",
            "baseline_name": "asyncio spawn of `true`",
            "baseline_value": bare_rate,
            "goal": ">= 300 runs/s",
            "ok": rate >= 300,
        },
        {
            # CPU per run holds on a noisy machine where runs/s does not
            "name": "runner CPU per run: runner process (its executions' CPU beside)",
            "value": own_ms,
            "unit": "ms",
            "baseline_name": "CPU of the run's execution processes",
            "baseline_value": children_ms,
            "goal": "",
            "ok": None,
        },
        {
            "name": "runner overhead launch->started (median)",
            "value": statistics.median(overhead) * 1000,
            "unit": "ms",
            "baseline_name": "bare create_subprocess_exec (median)",
            "baseline_value": bare_spawn * 1000,
            "goal": "<= 3x baseline",
            "ok": statistics.median(overhead) <= 3 * bare_spawn,
        },
    ]


if __name__ == "__main__":
    _ROOT = str(Path(__file__).resolve().parent.parent)
    if _ROOT not in sys.path:
        sys.path.insert(0, _ROOT)
    from bench.run import main

    sys.exit(main(["--only", "runner", *sys.argv[1:]]))
