"""History rows: what start-up, memory, queries and a rebuild cost once the system holds N runs.

A namespace gets ``runs`` runs of history (bench/history.py: a month of launches with dedupe
ids, executions, pipelines, deliveries with attempts, rejected and duplicate launches); a second
one gets BASE_RUNS, the empty system beside which every figure is read; a third gets
REFERENCE_RUNS, the rebuild's reference rate. Rows:

- each service's seconds from start to ``/readyz`` and its RSS once ready (and settled);
- status store queries, SQLite and PostgreSQL: run info, the admin run list unfiltered and with
  each filter, a deep cursor page, run detail, the trigger log; p50 and p99;
- a full rebuild (SQLite): events/s at ``runs`` against REFERENCE_RUNS, wall time, store size on
  disk per run (and PostgreSQL's);
- the gateway's dedupe index: entries and bytes held, seconds to replay its topic.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

# Standalone runs (`python bench/bench_history.py`) need the repo root for `bench.` and `tests.`.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx

from bench import namespaces
from bench.history import History, write_history
from bench.procstat import cpu_s, rss_mb
from hookrun.dev.kafka_net import free_port
from hookrun.dev.postgres import new_database, pg_bin, server
from hookrun.dev.procs import ServiceProcess
from hookrun.events import topics
from hookrun.events.kafka import ensure_topics
from hookrun.gateway.adapters import KafkaDeliveryIndex
from hookrun.status.app import open_store
from hookrun.status.config import Settings
from hookrun.status.projection import ts
from hookrun.status.rebuild import rebuild
from hookrun.status.store import RunFilter, SqlStore
from tests.status.factories import CONFIG

#: Runs of history in `make bench` (``--runs`` for the full size).
DEFAULT_RUNS = 20_000
#: The "empty" system: a few runs, so that every query has rows to answer with.
BASE_RUNS = 100
#: The rebuild's reference size (issue 19): its events/s is the rate to hold at N runs.
REFERENCE_RUNS = 7_500
#: Samples per query and store.
QUERIES = 300
#: Seconds after /readyz before the settled RSS is read: the gateway replays its dedupe topic
#: in the background once it serves.
SETTLE_S = 3.0
READY_TIMEOUT_S = 180.0
READY_GOAL_S = 5.0
RSS_GOAL_MB = 150.0
P99_GOAL_MS = 20.0


def _say(text: str) -> None:
    print(f"  history: {text}", file=sys.stderr, flush=True)


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


def _du(path: Path) -> int:
    """Bytes of a SQLite store on disk, its WAL included."""
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*") if p.is_file())


class Namespace:
    """One system's topics, its history, and its status stores."""

    def __init__(self, label: str, runs: int, root: Path) -> None:
        self.label = label
        self.runs = runs
        self.name = namespaces.new()
        self.db = root / f"{self.name}.db"
        self.history = History()
        self.pg_url = ""

    def settings(self, bootstrap: str, url: str | None = None) -> Settings:
        return Settings(
            kafka_bootstrap_servers=bootstrap,
            hookrun_namespace=self.name,
            hookrun_database_url=url or f"sqlite:///{self.db}",
            log_level="WARNING",
        )


async def _rebuild(settings: Settings) -> tuple[int, float]:
    started = time.perf_counter()
    events = await rebuild(settings)
    return events, time.perf_counter() - started


async def _query_rows(store: SqlStore, ns: Namespace) -> dict[str, tuple[float, float]]:
    """p50 and p99 in ms of each query on ``store``, QUERIES samples each."""
    sample = ns.history.sample
    count = (await store._rows("SELECT COUNT(*) AS n FROM runs"))[0]["n"]
    deep = await store._rows(
        "SELECT received_at, run_id FROM runs ORDER BY received_at DESC, run_id DESC"
        " LIMIT 1 OFFSET ?",
        (int(count * 0.9),),
    )
    after = (deep[0]["received_at"], deep[0]["run_id"])
    middle = await store._rows(
        "SELECT received_at FROM runs ORDER BY received_at LIMIT 1 OFFSET ?", (count // 2,)
    )
    since = middle[0]["received_at"]
    until = ts(datetime.fromisoformat(since) + timedelta(days=1))
    queries: dict[str, Callable[[int], Awaitable[object]]] = {
        "run info": lambda i: store.run_info(sample[i % len(sample)]),
        "run list": lambda i: store.list_runs(RunFilter()),
        "run list by trigger": lambda i: store.list_runs(RunFilter(trigger_id="sw")),
        "run list by run status": lambda i: store.list_runs(RunFilter(run_status="FAILURE")),
        # A status no run of the history has: the list must not read them all to say so.
        "run list by absent status": lambda i: store.list_runs(RunFilter(run_status="CANCELED")),
        "run list by info status": lambda i: store.list_runs(RunFilter(info_status="error")),
        "run list by time": lambda i: store.list_runs(RunFilter(since=since, until=until)),
        "run list deep page": lambda i: store.list_runs(RunFilter(after=after)),
        "run detail": lambda i: store.run_detail(sample[i % len(sample)]),
        "trigger log": lambda i: store.trigger_log("gh", None, 50),
    }
    out = {}
    for name, query in queries.items():
        times = []
        for i in range(QUERIES):
            started = time.perf_counter()
            await query(i)
            times.append((time.perf_counter() - started) * 1000)
        out[name] = (_pct(times, 50), _pct(times, 99))
    return out


async def _queries(url: str, ns: Namespace) -> dict[str, tuple[float, float]]:
    store = open_store(url)
    await store.open()
    try:
        return await _query_rows(store, ns)
    finally:
        await store.close()


def _service(name: str, ns: Namespace, bootstrap: str, root: Path) -> tuple[ServiceProcess, str]:
    """The service ``name`` on ``ns``'s topics and SQLite store, and its /readyz URL."""
    port, status_port = free_port(), free_port()
    env = {
        "HOOKRUN_CONFIG": str(root / "hookrun.yaml"),
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "HOOKRUN_NAMESPACE": ns.name,
        "HOOKRUN_PORT": str(port),
        "HOOKRUN_STATUS_PORT": str(port),
        "HOOKRUN_STATUS_URL": f"http://127.0.0.1:{status_port}",
        "HOOKRUN_RUNNER_HEALTH_PORT": str(port),
        "HOOKRUN_NOTIFIER_HEALTH_PORT": str(port),
        "HOOKRUN_DATA_DIR": str(root / f"data-{ns.name}"),
        "HOOKRUN_DATABASE_URL": f"sqlite:///{ns.db}",
        "HOOKRUN_ADMIN_TOKEN": "bench-admin-token",
        "LOG_LEVEL": "WARNING",
    }
    proc = ServiceProcess(f"{name}-{ns.label}", f"hookrun.{name}", env, root / "logs")
    return proc, f"http://127.0.0.1:{port}/readyz"


async def _start_up(
    name: str, ns: Namespace, bootstrap: str, root: Path
) -> tuple[float, float, float, float]:
    """Seconds from start to /readyz 200, RSS (MB) then, RSS SETTLE_S later, and the CPU
    seconds the process had used when ready (which the machine's load does not stretch)."""
    proc, url = _service(name, ns, bootstrap, root)
    started = time.perf_counter()
    proc.start(wait_s=0)
    try:
        async with httpx.AsyncClient(timeout=1.0) as client:
            while True:
                if proc.proc is not None and proc.proc.poll() is not None:
                    raise RuntimeError(f"{proc.name} exited:\n{proc.tail()}")
                if time.perf_counter() - started > READY_TIMEOUT_S:
                    raise TimeoutError(f"{proc.name} not ready:\n{proc.tail()}")
                try:
                    if (await client.get(url)).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.02)
        ready = time.perf_counter() - started
        rss, cpu = rss_mb(proc.pid), sum(cpu_s(proc.pid))
        await asyncio.sleep(SETTLE_S)
        return ready, rss, rss_mb(proc.pid), cpu
    finally:
        proc.stop()


async def _dedupe_index(bootstrap: str, ns: Namespace) -> tuple[int, int, float, int]:
    """Entries and bytes the gateway's dedupe index holds on ``ns``, the seconds its first
    lookup takes after start (it replays the dedupe topic's window), and the records read."""
    index = KafkaDeliveryIndex(
        bootstrap, window_s=topics.DEDUPE_WINDOW_S, namespace=ns.name, catch_up_timeout_s=120
    )
    await index.start()
    try:
        started = time.perf_counter()
        await index.find("gh", "no-such-delivery")
        seconds = time.perf_counter() - started
        held = index.entries()
        size = sys.getsizeof(held.copy())
        for key, (run_id, at) in held.items():
            size += sys.getsizeof(key) + sys.getsizeof((run_id, at))
            size += sys.getsizeof(run_id) + sys.getsizeof(at)
        return len(held), size, seconds, index.records_read
    finally:
        await index.stop()


def _row(
    name: str,
    value: float,
    unit: str,
    baseline_name: str,
    baseline: float,
    goal: str = "reported",
    ok: bool | None = None,
    **extra: object,
) -> dict[str, object]:
    return {
        "name": name,
        "value": value,
        "unit": unit,
        "baseline_name": baseline_name,
        "baseline_value": baseline,
        "goal": goal,
        "ok": ok,
        **extra,
    }


async def run(bootstrap: str, seconds: float, runs: int = DEFAULT_RUNS) -> list[dict[str, object]]:
    """Write the histories, measure, and return the history rows."""
    root = Path(tempfile.mkdtemp(prefix="hookrun-bench-history-"))
    try:
        return await _measure(bootstrap, runs, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)  # the stores: gigabytes at a million runs


async def _measure(bootstrap: str, runs: int, root: Path) -> list[dict[str, object]]:
    (root / "hookrun.yaml").write_text(CONFIG)
    big = Namespace("history", runs, root)
    empty = Namespace("empty", BASE_RUNS, root)
    ref = Namespace("reference", REFERENCE_RUNS, root)
    rows: list[dict[str, object]] = []
    n = f"{runs:,} runs"
    base = f"empty system ({BASE_RUNS} runs)"
    for ns in (empty, ref, big):
        await ensure_topics(bootstrap, namespace=ns.name)
        started = time.perf_counter()
        ns.history = await write_history(bootstrap, ns.name, ns.runs)
        took = time.perf_counter() - started
        _say(f"{ns.label}: {ns.runs:,} runs, {ns.history.run_events:,} run events in {took:.1f} s")
    records = big.history.run_events + big.history.trigger_log
    rows.append(
        _row(
            f"history: written ({n})",
            records / took,
            "records/s",
            "",
            float("nan"),
            events=big.history.run_events,
            trigger_log=big.history.trigger_log,
            dedupe_records=big.history.dedupe_records,
            pipelines=big.history.pipelines,
        )
    )

    # The rebuild at N runs and at REFERENCE_RUNS, in turn (reference, N, reference).
    ref_rounds = []
    for ns in (ref, big, ref):
        events, wall = await _rebuild(ns.settings(bootstrap))
        _say(f"rebuild of {ns.runs:,} runs: {events:,} events in {wall:.1f} s")
        if ns is ref:
            ref_rounds.append((events, wall))
        else:
            big_events, big_wall = events, wall
    ref_rate = sum(e for e, _ in ref_rounds) / sum(w for _, w in ref_rounds)
    big_rate = big_events / big_wall
    await _rebuild(empty.settings(bootstrap))
    rows += [
        _row(
            f"history: rebuild, SQLite ({n})",
            big_rate,
            "events/s",
            f"rebuild at {REFERENCE_RUNS:,} runs",
            ref_rate,
            ">= 80% of baseline",
            big_rate >= 0.8 * ref_rate,
            events=big_events,
            reference_rounds=[e / w for e, w in ref_rounds],
        ),
        _row(f"history: rebuild wall time ({n})", big_wall, "s", "", float("nan")),
        _row(
            f"history: SQLite store on disk per run ({n})",
            _du(big.db) / runs,
            "bytes/run",
            f"at {REFERENCE_RUNS:,} runs",
            _du(ref.db) / REFERENCE_RUNS,
        ),
    ]

    # The services' start-up, on the history and on the empty system, in turn.
    for name in ("gateway", "runner", "notifier", "status"):
        order = (empty, big, big, empty)
        got: dict[str, list[tuple[float, float, float, float]]] = {"history": [], "empty": []}
        for ns in order:
            got[ns.label].append(await _start_up(name, ns, bootstrap, root))
            _say(f"{name} on {ns.label}: ready in {got[ns.label][-1][0]:.2f} s")
        ready = min(r[0] for r in got["history"])
        ready0 = min(r[0] for r in got["empty"])
        rss = max(max(r[1], r[2]) for r in got["history"])
        rss0 = max(max(r[1], r[2]) for r in got["empty"])
        cpu = min(r[3] for r in got["history"])
        cpu0 = min(r[3] for r in got["empty"])
        rows += [
            _row(
                f"history: {name} start to /readyz ({n})",
                ready,
                "s",
                base,
                ready0,
                f"<= {READY_GOAL_S:g} s",
                ready <= READY_GOAL_S,
                rounds=got,
            ),
            _row(f"history: {name} CPU until ready ({n})", cpu, "s", base, cpu0),
            _row(
                f"history: {name} RSS once ready ({n})",
                rss,
                "MB",
                base,
                rss0,
                f"<= {RSS_GOAL_MB:g} MB",
                rss <= RSS_GOAL_MB,
            ),
        ]

    entries, size, replay, read = await _dedupe_index(bootstrap, big)
    entries0, size0, replay0, _ = await _dedupe_index(bootstrap, empty)
    rows += [
        _row(
            f"history: gateway dedupe index held ({n}, 6 h window)",
            size / 1024,
            "KiB",
            base,
            size0 / 1024,
            "window's deliveries only",
            entries
            <= big.history.dedupe_records * (topics.DEDUPE_WINDOW_S / 86400 / 30) * 1.5 + 10_000,
            entries=entries,
            baseline_entries=entries0,
            records_written=big.history.dedupe_records,
            records_read=read,
        ),
        _row(
            f"history: gateway dedupe topic replay, first lookup ({n})",
            replay,
            "s",
            base,
            replay0,
        ),
    ]

    # Queries: SQLite stores from the rebuilds above, PostgreSQL ones rebuilt into a server.
    stores = [("SQLite", f"sqlite:///{big.db}", f"sqlite:///{empty.db}")]
    bindir = pg_bin()
    with server(bindir) if bindir is not None else _no_postgres() as pg:
        if pg:
            big.pg_url, empty.pg_url = new_database(pg), new_database(pg)
            _, pg_wall = await _rebuild(big.settings(bootstrap, big.pg_url))
            _say(f"PostgreSQL rebuild of {runs:,} runs: {pg_wall:.1f} s")
            await _rebuild(empty.settings(bootstrap, empty.pg_url))
            size = await _pg_size(big.pg_url)
            rows += [
                _row(
                    f"history: rebuild wall time, PostgreSQL ({n})", pg_wall, "s", "", float("nan")
                ),
                _row(
                    f"history: PostgreSQL database per run ({n})",
                    size / runs,
                    "bytes/run",
                    "",
                    float("nan"),
                ),
            ]
            stores.append(("PostgreSQL", big.pg_url, empty.pg_url))
        for db, url, url0 in stores:
            figures = await _queries(url, big)
            _say(f"{db} queries measured")
            figures0 = await _queries(url0, empty)
            for query, (p50, p99) in figures.items():
                b50, b99 = figures0[query]
                rows += [
                    _row(f"history: {db} {query} p50 ({n})", p50, "ms", base, b50),
                    _row(
                        f"history: {db} {query} p99 ({n})",
                        p99,
                        "ms",
                        base,
                        b99,
                        f"<= {P99_GOAL_MS:g} ms and <= 2x baseline",
                        p99 <= P99_GOAL_MS and p99 <= 2 * b99,
                    ),
                ]
    if not pg:
        print("(PostgreSQL binaries not found: no PostgreSQL rows)", file=sys.stderr)
    return rows


class _no_postgres:
    def __enter__(self) -> str:
        return ""

    def __exit__(self, *exc: Any) -> None:
        return None


async def _pg_size(url: str) -> int:
    import psycopg

    async with await psycopg.AsyncConnection.connect(url) as conn:
        cur = await conn.execute("SELECT pg_database_size(current_database())")
        row = await cur.fetchone()
        assert row is not None
        return int(row[0])


if __name__ == "__main__":
    import orjson

    result = asyncio.run(
        run(
            os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"),
            5.0,
            int(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_RUNS,
        )
    )
    for row in result:
        print(orjson.dumps(row, default=str).decode())
