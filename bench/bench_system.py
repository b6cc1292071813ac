"""System rows: the whole system as `make run` starts it, launch -> signed notification received.

Rows, each beside a baseline measured in the same run:

- end-to-end latency (launch sent -> RunNotification received by the subscriber) for a no-op
  step at 50 runs/s open loop: p50 and p99, beside the gateway's own launch latency in the same
  window and a raw aiokafka produce -> consume round trip at the same rate;
- sustained end-to-end throughput: runs notified per second while launches arrive at 300/s for
  ``seconds * 12`` (60 s with the default 5 s; ``BENCH_SYSTEM_SUSTAINED_S`` overrides), and the
  seconds until the runner's and the notifier's consumer groups have no lag once the load stops,
  beside raw aiokafka produce -> consume msgs/s;
- resident memory of every service under that load, beside the no-op FastAPI app under load;
- valid launches during a flood of invalid signatures (5x their rate) vs without a flood.

``BENCH_SYSTEM_PROFILE=<dir>`` records a py-spy profile (collapsed stacks) of every service
during the sustained window into that directory.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from bench.loadgen import Result, build_request, closed_loop, open_loop
from bench.noop_app import noop_process
from bench.procstat import cpu_s, rss_mb
from hookrun.dev.procs import ServiceProcess
from hookrun.dev.receiver import Received, Receiver
from hookrun.events import topics
from hookrun.events.kafka import (
    admin_settings,
    consumer_settings,
    partitions_of,
    producer_settings,
    security_settings,
)
from tests.e2e.support import GH_SECRET, WHSEC, System

LATENCY_RATE = 50.0
SUSTAINED_RATE = float(os.environ.get("BENCH_SYSTEM_RATE", "300"))
FLOOD_FACTOR = 5
#: Seconds allowed for the last notifications / for consumer lag to reach zero.
DRAIN_TIMEOUT_S = 60.0
LAG_GOAL_S = 10.0


def _config(receiver: Receiver) -> str:
    url = receiver.url("/hooks/noop")
    return f"""
project: {{id: p-bench, slug: bench, name: Bench}}
organization: {{id: o-bench, slug: bench, title: Bench}}
environment: {{id: e-bench, slug: bench, type: DEVELOPMENT}}
steps:
  - {{name: noop, command: ["true"]}}
notifier:
  allow_private_targets: true
triggers:
  - id: noop
    title: No-op step, GitHub signature
    conditions: [{{preset: github, secret: "${{env:HOOKRUN_E2E_GH_SECRET}}"}}]
    actions: [{{action: run_execution, step: noop}}]
    response: {{text: "Created run {{run_id}}"}}
    notifications: [{{url: "{url}", secret: "${{env:HOOKRUN_E2E_WHSEC}}"}}]
"""


class Launches:
    """Signed launch requests, each with a sequence number in its payload; remembers send times."""

    def __init__(self, port: int, *, valid: bool = True) -> None:
        self.port = port
        self.valid = valid
        self.seq = itertools.count()
        self.sent: dict[int, float] = {}

    def __call__(self) -> bytes:
        i = next(self.seq)
        body = orjson.dumps({"seq": i, "records": [{"id": n} for n in range(10)]})
        secret = GH_SECRET if self.valid else "not-the-secret"
        sig = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        headers = {"Content-Type": "application/json", "X-Hub-Signature-256": sig}
        self.sent[i] = time.perf_counter()
        return build_request("127.0.0.1", self.port, "/api/v0/launch/noop/", body, headers)


class Arrivals:
    """When each run's notification reached the subscriber (perf_counter), by payload seq."""

    def __init__(self) -> None:
        self.at: dict[int, float] = {}
        self.lock = threading.Lock()

    def __call__(self, request: Received) -> None:
        now = time.perf_counter()
        try:
            seq = request.json()["invocation"]["payload"]["seq"]
        except (ValueError, KeyError, TypeError):
            return
        with self.lock:
            self.at.setdefault(seq, now)

    def count(self) -> int:
        with self.lock:
            return len(self.at)


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


async def _wait(check: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


def _check(result: Result, status: int, what: str) -> None:
    bad = {s: n for s, n in result.statuses.items() if s != status}
    if bad or result.errors:
        raise RuntimeError(f"{what}: unexpected answers {bad} / {result.errors} errors")


# -- raw Kafka baselines ------------------------------------------------------------------------


async def _raw_kafka(bootstrap: str, topic: str, seconds: float) -> tuple[float, float, float]:
    """(p50 ms, p99 ms) of produce -> consume at LATENCY_RATE, and produce -> consume msgs/s.

    Same producer and consumer settings as the services; the message is the size of a launch.
    """
    admin = AIOKafkaAdminClient(**admin_settings(bootstrap))
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 6, 1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(**producer_settings(bootstrap, "bench"))
    consumer = AIOKafkaConsumer(**consumer_settings(bootstrap, "bench", group=None))
    await producer.start()
    await consumer.start()
    try:
        tps: list[TopicPartition] = []
        for _ in range(100):
            tps = await partitions_of(consumer, topic)
            if len(tps) == 6:
                break
            await asyncio.sleep(0.1)
        consumer.assign(tps)
        await consumer.seek_to_end()
        for tp in tps:
            await consumer.position(tp)
        sent: dict[bytes, float] = {}
        got: dict[bytes, float] = {}
        value = b"x" * 1200

        async def read(until: Callable[[], bool]) -> None:
            while not until():
                batch = await consumer.getmany(timeout_ms=100)
                now = time.perf_counter()
                for records in batch.values():
                    for r in records:
                        got.setdefault(r.key, now)

        # round trip at the latency row's rate
        n = int(LATENCY_RATE * seconds)
        reader = asyncio.create_task(read(lambda: len(got) >= n))
        start = time.perf_counter()
        futures = []
        for i in range(n):
            delay = start + i / LATENCY_RATE - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            key = f"rt-{i}".encode()
            sent[key] = time.perf_counter()
            futures.append(await producer.send(topic, value, key=key))
        await asyncio.gather(*futures)
        await asyncio.wait_for(reader, 30)
        rtt = [(got[k] - sent[k]) * 1000 for k in sent]
        # throughput: as fast as possible, 64 sends in flight, until the consumer read them all
        got.clear()
        total = 0
        start = time.perf_counter()
        deadline = start + seconds
        reader = asyncio.create_task(read(lambda: total > 0 and len(got) >= total))
        i = 0
        while time.perf_counter() < deadline:
            batch = [
                await producer.send(topic, value, key=f"tp-{i + j}".encode()) for j in range(64)
            ]
            i += 64
            await asyncio.gather(*batch)
        total = i
        await asyncio.wait_for(reader, 60)
        rate = total / (time.perf_counter() - start)
        return _pct(rtt, 50), _pct(rtt, 99), rate
    finally:
        await consumer.stop()
        await producer.stop()


# -- consumer lag --------------------------------------------------------------------------------


async def _group_lag(
    admin: AIOKafkaAdminClient, consumer: AIOKafkaConsumer, groups: list[str], topic: str
) -> int:
    tps = await partitions_of(consumer, topic)
    ends = await consumer.end_offsets(tps)
    lag = 0
    for group in groups:
        committed = await admin.list_consumer_group_offsets(group, partitions=tps)
        for tp in tps:
            meta = committed.get(tp)
            done = meta.offset if meta is not None and meta.offset >= 0 else 0
            lag += max(0, ends[tp] - done)
    return lag


# -- the benchmark -------------------------------------------------------------------------------


async def run(bootstrap: str, seconds: float) -> list[dict[str, Any]]:
    """Measure and return the system rows."""
    sustained_s = float(os.environ.get("BENCH_SYSTEM_SUSTAINED_S", seconds * 12))
    profile_dir = os.environ.get("BENCH_SYSTEM_PROFILE")
    root = Path(tempfile.mkdtemp(prefix="hookrun-bench-system-"))
    arrivals = Arrivals()
    receiver = Receiver([WHSEC], on_request=arrivals)
    system = System(
        bootstrap,
        root,
        config=_config,
        receiver=receiver,
        env={"LOG_LEVEL": "WARNING"},
        namespace=f"bench-{uuid.uuid4().hex[:8]}",
    )
    noop, noop_port = noop_process(root)
    runs_topic = topics.named(topics.RUNS, system.namespace)
    groups = [f"{system.namespace}.runner", f"{system.namespace}.notifier"]
    try:
        await asyncio.to_thread(system.start)
        await asyncio.to_thread(noop.start, wait_s=30)
        launches = Launches(system.port)

        async def launch_at(rate: float, secs: float) -> tuple[Result, range]:
            first = next(launches.seq)  # the numbers this window uses start after this one
            result = await open_loop("127.0.0.1", system.port, launches, rate=rate, seconds=secs)
            window = range(first + 1, next(launches.seq))
            _check(result, 202, "valid launches")
            return result, window

        def arrived(window: range) -> bool:
            return all(i in arrivals.at for i in window if i in launches.sent)

        # warm-up: connections, metadata, the runner's first spawns
        _, window = await launch_at(20, 2)
        if not await _wait(lambda: arrived(window), DRAIN_TIMEOUT_S):
            raise RuntimeError(f"warm-up runs were not notified\n{system.logs()}")

        # (a) end-to-end latency at 50 runs/s
        gw, window = await launch_at(LATENCY_RATE, seconds)
        await _wait(lambda: arrived(window), DRAIN_TIMEOUT_S)
        e2e = [
            (arrivals.at[i] - launches.sent[i]) * 1000
            for i in window
            if i in launches.sent and i in arrivals.at
        ]
        missing = sum(1 for i in window if i in launches.sent and i not in arrivals.at)

        # (d) valid launches at 50/s without and with an invalid-signature flood at 5x
        calm, _ = await launch_at(LATENCY_RATE, seconds)
        invalid = Launches(system.port, valid=False)
        flood_task = asyncio.create_task(
            open_loop(
                "127.0.0.1",
                system.port,
                invalid,
                rate=LATENCY_RATE * FLOOD_FACTOR,
                seconds=seconds,
            )
        )
        flooded, _ = await launch_at(LATENCY_RATE, seconds)
        flood = await flood_task
        _check(flood, 400, "invalid launches")

        # (b, c) sustained throughput with RSS sampled throughout
        rss: dict[str, float] = {p.name: 0.0 for p in system.procs}
        sampling = True

        async def sample() -> None:
            while sampling:
                for p in system.procs:
                    rss[p.name] = max(rss[p.name], rss_mb(p.pid))
                await asyncio.sleep(0.25)

        sampler = asyncio.create_task(sample())
        spies = _profile(system.procs, sustained_s, profile_dir)
        before = arrivals.count()
        cpu0 = {p.name: sum(cpu_s(p.pid)) for p in system.procs}
        t0 = time.perf_counter()
        sustained, window = await launch_at(SUSTAINED_RATE, sustained_s)
        t_stop = time.perf_counter()
        cpu_used = {p.name: sum(cpu_s(p.pid)) - cpu0[p.name] for p in system.procs}
        with arrivals.lock:
            notified_in_window = sum(1 for i in window if arrivals.at.get(i, t_stop + 1) <= t_stop)
        sampling = False
        await sampler
        for spy in spies:
            spy.wait(timeout=60)
        lag_zero_s = await _lag_zero(bootstrap, groups, runs_topic)
        await _wait(lambda: arrived(window), DRAIN_TIMEOUT_S)
        drained = arrivals.count() - before
        throughput = notified_in_window / (t_stop - t0)
        offered = sustained.rate

        # (c) baseline: the no-op FastAPI app's RSS under a closed loop
        noop_req = build_request(
            "127.0.0.1", noop_port, "/noop", b'{"x": 1}', {"Content-Type": "application/json"}
        )
        noop_rss = 0.0
        load = asyncio.create_task(
            closed_loop("127.0.0.1", noop_port, noop_req, concurrency=32, seconds=seconds)
        )
        while not load.done():
            noop_rss = max(noop_rss, rss_mb(noop.pid))
            await asyncio.sleep(0.25)
        await load

        raw_p50, _raw_p99, raw_rate = await _raw_kafka(
            bootstrap, f"{system.namespace}.bench-roundtrip", seconds
        )
    finally:
        await asyncio.to_thread(system.stop)
        noop.stop()
        shutil.rmtree(root, ignore_errors=True)

    p50, p99 = _pct(e2e, 50), _pct(e2e, 99)
    note = f" ({missing} not notified)" if missing else ""
    rows: list[dict[str, Any]] = [
        {
            "name": f"system: e2e p50 launch -> notification, no-op step, {LATENCY_RATE:.0f} runs/s{note}",
            "value": p50,
            "unit": "ms",
            "baseline_name": "gateway launch p50, same window",
            "baseline_value": gw.pct(50),
            "goal": "<= 50 ms",
            "ok": p50 <= 50 and not missing,
        },
        {
            "name": f"system: e2e p99 launch -> notification, {LATENCY_RATE:.0f} runs/s",
            "value": p99,
            "unit": "ms",
            "baseline_name": "gateway launch p99, same window",
            "baseline_value": gw.pct(99),
            "goal": "<= 250 ms",
            "ok": p99 <= 250 and not missing,
        },
        {
            "name": "system: e2e p50 vs raw Kafka round trip",
            "value": p50,
            "unit": "ms",
            "baseline_name": f"aiokafka produce->consume p50 at {LATENCY_RATE:.0f}/s",
            "baseline_value": raw_p50,
            "goal": "",
            "ok": None,
        },
        {
            "name": (
                f"system: runs notified/s, {offered:.0f} launches/s offered for {sustained_s:.0f} s"
            ),
            "value": throughput,
            "unit": "runs/s",
            "baseline_name": "raw aiokafka produce->consume",
            "baseline_value": raw_rate,
            "goal": ">= 300 runs/s",
            "ok": throughput >= 300,
        },
        {
            "name": f"system: s until runner+notifier lag is 0 after the load ({drained} notified)",
            "value": lag_zero_s,
            "unit": "s",
            "baseline_name": "",
            "baseline_value": None,
            "goal": f"<= {LAG_GOAL_S:.0f} s",
            "ok": lag_zero_s <= LAG_GOAL_S,
        },
    ]
    # Where the two cores went: CPU per run notified in the window (the runner's executions
    # included), beside the window's wall time per run.
    for name, used in cpu_used.items():
        rows.append(
            {
                "name": f"system: CPU of {name} per run notified under the sustained load",
                "value": used * 1000 / max(notified_in_window, 1),
                "unit": "ms",
                "baseline_name": "wall time per run notified (2 cores)",
                "baseline_value": (t_stop - t0) * 1000 / max(notified_in_window, 1),
                "goal": "",
                "ok": None,
            }
        )
    for name, mb in rss.items():
        rows.append(
            {
                "name": f"system: max RSS of {name} under the sustained load",
                "value": mb,
                "unit": "MB",
                "baseline_name": "no-op FastAPI app under load",
                "baseline_value": noop_rss,
                "goal": "<= 150 MB",
                "ok": mb <= 150,
            }
        )
    rows += [
        {
            "name": (
                f"flood: valid launches/s at {LATENCY_RATE:.0f}/s offered, "
                f"{LATENCY_RATE * FLOOD_FACTOR:.0f}/s invalid signatures alongside"
            ),
            "value": flooded.rate,
            "unit": "req/s",
            "baseline_name": "the same without the flood",
            "baseline_value": calm.rate,
            "goal": ">= 80% of baseline",
            "ok": flooded.rate >= 0.8 * calm.rate,
        },
        {
            "name": "flood: valid launch p50 during the flood",
            "value": flooded.pct(50),
            "unit": "ms",
            "baseline_name": "the same without the flood",
            "baseline_value": calm.pct(50),
            "goal": "<= 120% of baseline",
            "ok": flooded.pct(50) <= 1.2 * calm.pct(50),
        },
        {
            "name": "flood: valid launch p99 during the flood",
            "value": flooded.pct(99),
            "unit": "ms",
            "baseline_name": "the same without the flood",
            "baseline_value": calm.pct(99),
            "goal": "",
            "ok": None,
        },
    ]
    return rows


async def _lag_zero(bootstrap: str, groups: list[str], topic: str) -> float:
    """Seconds from now until the groups' committed offsets reach the log end (inf if never)."""
    admin = AIOKafkaAdminClient(**admin_settings(bootstrap))
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, **security_settings(), group_id=None)
    await admin.start()
    await consumer.start()
    start = time.perf_counter()
    try:
        while time.perf_counter() - start < DRAIN_TIMEOUT_S:
            if await _group_lag(admin, consumer, groups, topic) == 0:
                return time.perf_counter() - start
            await asyncio.sleep(0.1)
        return float("inf")
    finally:
        await consumer.stop()
        await admin.close()


def _profile(
    procs: list[ServiceProcess], seconds: float, out: str | None
) -> list[subprocess.Popen[bytes]]:
    """py-spy record (collapsed stacks) of every service for ``seconds``, when asked to."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not out or not Path(spy).exists():
        return []
    Path(out).mkdir(parents=True, exist_ok=True)
    return [
        subprocess.Popen(
            [
                spy,
                "record",
                "--pid",
                str(p.pid),
                "--duration",
                str(int(seconds)),
                "--format",
                "raw",
                "--rate",
                "50",
                "--subprocesses",
                "--nonblocking",
                "--output",
                str(Path(out) / f"{p.name}.txt"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for p in procs
        if p.pid is not None
    ]


if __name__ == "__main__":
    from bench.run import main

    sys.exit(main(["--only", "system", *sys.argv[1:]]))
