"""System rows: the whole system as `make run` starts it, launch -> signed notification received.

Rows, each beside a baseline measured in the same run:

- end-to-end latency (launch sent -> RunNotification received by the subscriber) for a no-op
  step at 50 runs/s open loop: p50 and p99, beside the gateway's own launch latency in the same
  window and a raw aiokafka produce -> consume round trip at the same rate;
- sustained throughput, found rather than offered: launches offered open loop in steps of
  ``BENCH_SYSTEM_STEP_S`` (default 60 s), from a share of the runner's own no-op maximum
  upwards by a factor until a step fails, then once between the last held and the first failed
  rate; the row is the highest rate held (every launch answered 202, launch p99 within a
  second, the runner's and the notifier's consumer lag back to 0 within 10 s of the offer's
  end), beside the no-op maximum of a runner alone (bench/bench_runner.py) before and after the
  system in the same run;
- CPU per run of every service at the held rate; resident memory of every service through the
  steps, beside the no-op FastAPI app under load;
- valid launches during a flood of invalid signatures (5x their rate) vs without a flood.

``BENCH_SYSTEM_PROFILE=<dir>`` records a py-spy profile (collapsed stacks) of every service
during each step into ``<dir>/<rate>/``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import itertools
import math
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from bench import namespaces
from bench.bench_runner import noop_max, noop_runs, runner_alone
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
FLOOD_FACTOR = 5
#: Seconds allowed for the last notifications / for consumer lag to reach zero.
DRAIN_TIMEOUT_S = 60.0
#: A step is held only if the runner's and notifier's lag is 0 this soon after its offer ends.
LAG_GOAL_S = 10.0
#: Seconds each step offers its rate for; 60 s is the rule for the reported row.
STEP_S = 60.0
#: The first step offers this share of the runner's own no-op maximum: the whole system on the
#: same cores held 0.6-1.1x of it (decision 0056), so this one should hold.
START_SHARE = 0.5
#: Each step offers this many times the last held one (or 1/this after a failed first step).
FACTOR = 1.5
#: Steps in all, the bisection included: from START_SHARE up to past the runner's own maximum
#: and the bisection, within about 6 minutes of 60 s steps so `make bench` stays under 20.
MAX_STEPS = 5
#: A launch p99 above this: the gateway did not take the offer at its rate.
LAUNCH_P99_LIMIT_MS = 1000.0


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


async def _raw_kafka(bootstrap: str, topic: str, seconds: float) -> tuple[float, float]:
    """(p50 ms, p99 ms) of produce -> consume at LATENCY_RATE.

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
        return _pct(rtt, 50), _pct(rtt, 99)
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


@contextlib.asynccontextmanager
async def _lag_zero_within(
    bootstrap: str, groups: list[str], topic: str
) -> AsyncIterator[Callable[[float], Awaitable[float]]]:
    """A function: seconds from its call until the groups' committed offsets reach the log end
    (inf if not within the timeout it is given)."""
    admin = AIOKafkaAdminClient(**admin_settings(bootstrap))
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, **security_settings(), group_id=None)
    await admin.start()
    await consumer.start()

    async def zero_within(timeout_s: float) -> float:
        start = time.perf_counter()
        while time.perf_counter() - start < timeout_s:
            if await _group_lag(admin, consumer, groups, topic) == 0:
                return time.perf_counter() - start
            await asyncio.sleep(0.1)
        return float("inf")

    try:
        yield zero_within
    finally:
        await consumer.stop()
        await admin.close()


# -- the search for the highest rate held -------------------------------------------------------


@dataclass
class Step:
    """One step of the search: a rate offered for a while, and whether the system held it."""

    rate: float
    #: why it was not held ("lag not drained", "errors", "latency"; joined), "" if held
    why: str
    #: what was measured (answers, latency, lag, CPU, load average), for the results file
    measured: dict[str, Any] = field(default_factory=dict)

    @property
    def held(self) -> bool:
        return not self.why


async def find_held(
    offer: Callable[[float], Awaitable[Step]],
    recover: Callable[[], Awaitable[bool]],
    start: float,
    *,
    factor: float = FACTOR,
    max_steps: int = MAX_STEPS,
) -> list[Step]:
    """Offer rates in steps, and return the steps in the order taken.

    Up by ``factor`` from ``start`` while each holds (down by it while none has), then once
    between the highest rate held and the lowest that failed (their geometric mean, as the
    steps are geometric). Rates are whole launches per second. ``recover()`` is awaited after a
    failed step before any other, and False (the system did not drain) ends the search.
    """
    steps: list[Step] = []
    bisected = False
    rate = max(1.0, round(start))
    while len(steps) < max_steps:
        step = await offer(rate)
        steps.append(step)
        held = [s.rate for s in steps if s.held]
        failed = [s.rate for s in steps if not s.held]
        lo, hi = max(held, default=None), min(failed, default=None)
        if hi is None:
            assert lo is not None
            rate = max(lo + 1, round(lo * factor))
        elif lo is None:
            rate = round(hi / factor)
            if rate < 1:
                break
        elif bisected:
            break
        else:
            rate = round(math.sqrt(lo * hi))
            bisected = True
            if rate in (lo, hi):  # nothing left between them
                break
        if not step.held and len(steps) < max_steps and not await recover():
            break
    return steps


def held_and_failed(steps: list[Step]) -> tuple[Step | None, Step | None]:
    """The step at the highest rate held, and the one at the lowest rate above it that failed."""
    held = max((s for s in steps if s.held), key=lambda s: s.rate, default=None)
    floor = held.rate if held is not None else 0.0
    failed = min(
        (s for s in steps if not s.held and s.rate > floor), key=lambda s: s.rate, default=None
    )
    return held, failed


# -- the benchmark -------------------------------------------------------------------------------


async def run(bootstrap: str, seconds: float) -> list[dict[str, Any]]:
    """Measure and return the system rows."""
    step_s = float(os.environ.get("BENCH_SYSTEM_STEP_S", STEP_S))
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
        namespace=namespaces.new(),
    )
    noop, noop_port = noop_process(root)
    runs_topic = topics.named(topics.RUNS, system.namespace)
    groups = [f"{system.namespace}.runner", f"{system.namespace}.notifier"]
    try:
        # the baseline of the sustained row, while nothing else of the system runs: before the
        # system (it sets the first step's rate) and again after it, in turn
        runner_max = [await _runner_max(bootstrap, seconds)]
        await asyncio.to_thread(system.start)
        await asyncio.to_thread(noop.start, wait_s=30)
        launches = Launches(system.port)

        async def launch_at(rate: float, secs: float, check: bool = True) -> tuple[Result, range]:
            first = next(launches.seq)  # the numbers this window uses start after this one
            result = await open_loop("127.0.0.1", system.port, launches, rate=rate, seconds=secs)
            window = range(first + 1, next(launches.seq))
            if check:
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

        # (b, c) the highest rate held, with RSS sampled throughout
        rss: dict[str, float] = {p.name: 0.0 for p in system.procs}
        sampling = True

        async def sample() -> None:
            while sampling:
                for p in system.procs:
                    rss[p.name] = max(rss[p.name], rss_mb(p.pid))
                await asyncio.sleep(0.25)

        async def offer(rate: float) -> Step:
            out = f"{profile_dir}/{rate:.0f}" if profile_dir else None
            spies = _profile(system.procs, step_s, out)
            cpu0 = {p.name: sum(cpu_s(p.pid)) for p in system.procs}
            t0 = time.perf_counter()
            result, window = await launch_at(rate, step_s, check=False)
            t_stop = time.perf_counter()
            cpu_used = {p.name: sum(cpu_s(p.pid)) - cpu0[p.name] for p in system.procs}
            load = os.getloadavg()[0]
            lag_zero_s = await lag_zero_within(LAG_GOAL_S)
            for spy in spies:
                spy.wait(timeout=60)
            with arrivals.lock:
                notified = sum(1 for i in window if arrivals.at.get(i, t_stop + 1) <= t_stop)
            bad = sum(n for status, n in result.statuses.items() if status != 202)
            p99 = result.pct(99)
            why = [
                *(["errors"] if bad or result.errors else []),
                *(["latency"] if not p99 <= LAUNCH_P99_LIMIT_MS else []),
                *(["lag not drained"] if lag_zero_s > LAG_GOAL_S else []),
            ]
            step = Step(
                rate,
                ", ".join(why),
                {
                    "seconds": t_stop - t0,
                    "answered_202": result.statuses.get(202, 0),
                    "other_answers": bad,
                    "connection_errors": result.errors,
                    "launch_p99_ms": p99,
                    "notified_in_window": notified,
                    "lag_zero_s": lag_zero_s,
                    "cpu_s": cpu_used,
                    "load_average_1m": load,
                },
            )
            print(
                f"  step {rate:.0f} launches/s: {step.why or 'held'} (launch p99 {p99:.0f} ms, "
                f"lag 0 after {lag_zero_s:.1f} s, load {load:.1f})",
                file=sys.stderr,
                flush=True,
            )
            return step

        async def recover() -> bool:
            return await lag_zero_within(DRAIN_TIMEOUT_S) <= DRAIN_TIMEOUT_S

        sampler = asyncio.create_task(sample())
        async with _lag_zero_within(bootstrap, groups, runs_topic) as lag_zero_within:
            steps = await find_held(
                offer, recover, START_SHARE * runner_max[0], max_steps=MAX_STEPS
            )
        sampling = False
        await sampler

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

        raw_p50, _raw_p99 = await _raw_kafka(
            bootstrap, f"{system.namespace}.bench-roundtrip", seconds
        )
    finally:
        await asyncio.to_thread(system.stop)
        noop.stop()
        shutil.rmtree(root, ignore_errors=True)
    runner_max.append(await _runner_max(bootstrap, seconds))

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
    ]
    rows += _held_rows(steps, step_s, runner_max)
    for name, mb in rss.items():
        rows.append(
            {
                "name": f"system: max RSS of {name} through the steps",
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


async def _runner_max(bootstrap: str, seconds: float) -> float:
    """No-op runs/s of a runner alone (the runner row's measurement)."""
    async with runner_alone(bootstrap) as alone:
        rate, _, _ = await noop_max(alone, noop_runs(seconds))
    return rate


def _held_rows(steps: list[Step], step_s: float, runner_max: list[float]) -> list[dict[str, Any]]:
    """The sustained rows: the highest rate held beside the runner's own maximum (the mean of
    its measurements before and after), the lag after the held step, CPU per run at it."""
    held, failed = held_and_failed(steps)
    rate = held.rate if held is not None else 0.0
    if failed is not None:
        end = f"failed at {failed.rate:.0f}/s: {failed.why}"
    else:
        end = f"none failed up to {max(s.rate for s in steps):.0f}/s in {len(steps)} steps"
    rows: list[dict[str, Any]] = [
        {
            "name": (
                f"system: highest launches/s held {step_s:.0f} s, lag 0 within "
                f"{LAG_GOAL_S:.0f} s after ({end})"
            ),
            "value": rate,
            "unit": "launches/s",
            "baseline_name": "runner alone, no-op runs/s, same run",
            "baseline_value": sum(runner_max) / len(runner_max),
            "runner_alone_runs_s": runner_max,
            "goal": ">= 300 launches/s",
            "ok": rate >= 300,
            "steps": [{"rate": s.rate, "why": s.why or "held", **s.measured} for s in steps],
        }
    ]
    if held is None:
        return rows
    m = held.measured
    lag_note = f"; {failed.measured['lag_zero_s']:.1f} s at {failed.rate:.0f}/s" if failed else ""
    rows.append(
        {
            "name": f"system: s until runner+notifier lag is 0 after {rate:.0f}/s{lag_note}",
            "value": m["lag_zero_s"],
            "unit": "s",
            "baseline_name": "",
            "baseline_value": None,
            "goal": f"<= {LAG_GOAL_S:.0f} s",
            "ok": m["lag_zero_s"] <= LAG_GOAL_S,
        }
    )
    # Where the two cores went at the held rate: CPU per run notified in the step (the runner's
    # executions included), beside the step's wall time per run.
    notified = max(m["notified_in_window"], 1)
    for name, used in m["cpu_s"].items():
        rows.append(
            {
                "name": f"system: CPU of {name} per run notified at {rate:.0f} launches/s",
                "value": used * 1000 / notified,
                "unit": "ms",
                "baseline_name": "wall time per run notified (2 cores)",
                "baseline_value": m["seconds"] * 1000 / notified,
                "goal": "",
                "ok": None,
            }
        )
    return rows


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
