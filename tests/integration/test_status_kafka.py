"""The status service as real processes against the real broker, on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
import sqlite3
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import orjson
import pytest

from hookrun.dev.events import read_events
from hookrun.dev.kafka_net import free_port
from hookrun.dev.procs import ServiceProcess
from hookrun.dev.pytest_kafka import new_namespace
from hookrun.events import Event, RunStatus, topics
from hookrun.events.kafka import Publisher, ensure_topics
from hookrun.status.store import SECONDARY_INDEXES
from tests.integration.status_pg import new_database, postgres_server  # noqa: F401
from tests.status.factories import CONFIG, launched, rejected, run_events

pytestmark = pytest.mark.kafka

TOKEN = "admin-secret"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
OK, FAIL = RunStatus.SUCCESS, RunStatus.FAILURE


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend(request) -> str:
    return request.param


@pytest.fixture
def database_url(backend, request, tmp_path) -> str:
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'status.db'}"
    return new_database(request.getfixturevalue("postgres_server"))


@pytest.fixture
async def namespace(kafka_bootstrap) -> str:
    ns = new_namespace()
    await ensure_topics(kafka_bootstrap, namespace=ns)
    return ns


@pytest.fixture
async def publish(kafka_bootstrap, namespace):
    publisher = Publisher(kafka_bootstrap, "status-test", namespace=namespace)
    await publisher.start(wait=True)

    async def send(events: list[Event]) -> None:
        await publisher.publish(events)

    yield send
    await publisher.stop()


@pytest.fixture
def start_status(kafka_bootstrap, namespace, database_url, tmp_path):
    config = tmp_path / "hookrun.yaml"
    config.write_text(CONFIG)
    started: list[ServiceProcess] = []

    def start(**env: str) -> tuple[ServiceProcess, str]:
        port = free_port()
        full_env = {
            "HOOKRUN_CONFIG": str(config),
            "HOOKRUN_STATUS_PORT": str(port),
            "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
            "HOOKRUN_NAMESPACE": namespace,
            "HOOKRUN_DATABASE_URL": database_url,
            "HOOKRUN_ADMIN_TOKEN": TOKEN,
            **env,
        }
        proc = ServiceProcess(
            f"status-{port}",
            "hookrun.status",
            full_env,
            tmp_path,
            health_url=f"http://127.0.0.1:{port}/healthz",
        )
        started.append(proc)
        proc.start(wait_s=60)
        return proc, f"http://127.0.0.1:{port}"

    yield start
    for proc in started:
        proc.stop()


def info(url: str, trigger: str, run_id: str, **kw: Any) -> httpx.Response:
    return httpx.get(
        f"{url}/api/v0/launch/{trigger}/run/",
        params={"run_id": run_id},
        headers={"X-Token": "tok"},
        timeout=30,
        **kw,
    )


def gh_post(url: str, body: bytes, content_type: str) -> httpx.Response:
    sig = "sha256=" + hmac.new(b"gh-secret", body, hashlib.sha256).hexdigest()
    return httpx.post(
        f"{url}/api/v0/launch/gh/run/",
        content=body,
        headers={"X-Hub-Signature-256": sig, "content-type": content_type},
        timeout=30,
    )


def wait_for(check: Callable[[], Any], timeout_s: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        time.sleep(0.1)


async def test_run_info_every_status_variant_and_404s(start_status, publish):
    runs = {s: launched("tok") for s in ("completed", "error", "complete_with_error", "pending")}
    gh = launched("gh")
    await publish(
        [
            *[runs[k] for k in runs],
            gh,
            *run_events(runs["completed"], [OK, OK], pipeline=True),
            *run_events(runs["error"], [FAIL]),
            *run_events(runs["complete_with_error"], [OK, FAIL]),
            *run_events(runs["pending"], [OK, OK], finish=False)[:3],
            *run_events(gh, [OK]),
        ]
    )
    _, url = start_status()
    for expected, run in runs.items():
        r = info(url, "tok", run.run_id)
        assert r.status_code == 200, r.text
        assert r.json()["status"] == expected
    assert info(url, "tok", runs["completed"].run_id).json()["result"][-1] == {
        "action": "run_pipeline",
        "pipeline_name": "Nightly",
        "pipeline_id": f"{runs['completed'].run_id}-p",
    }
    # POST form and JSON, each signing its own body
    assert (
        gh_post(url, f"run_id={gh.run_id}".encode(), "application/x-www-form-urlencoded").json()[
            "status"
        ]
        == "completed"
    )
    assert (
        gh_post(url, orjson.dumps({"run_id": gh.run_id}), "application/json").json()["status"]
        == "completed"
    )
    bad = httpx.post(
        f"{url}/api/v0/launch/gh/run/",
        json={"run_id": gh.run_id},
        headers={"X-Hub-Signature-256": "sha256=00"},
    )
    assert (bad.status_code, bad.json()) == (400, {"error": "request rejected"})
    # another trigger's run, and a run that does not exist
    assert info(url, "tok", gh.run_id).status_code == 404
    assert info(url, "tok", str(uuid.uuid4())).json() == {"error": "run not found"}


async def test_read_your_writes_under_a_lagging_projection(start_status, publish):
    _, url = start_status(HOOKRUN_STATUS_APPLY_DELAY_MS="1500")
    for _ in range(3):
        run = launched("tok")
        await publish([run])
        # acknowledged a moment ago; the projection needs 1.5 s per batch
        r = info(url, "tok", run.run_id)
        assert (r.status_code, r.json()["status"]) == (200, "pending")


# The DLQ path does not depend on the store: one backend is enough.
@pytest.mark.parametrize("backend", ["sqlite"])
async def test_an_undecodable_event_is_dead_lettered_and_projection_goes_on(
    start_status, publish, kafka_bootstrap, namespace, backend
):
    _, url = start_status()
    bad_key = str(uuid.uuid4())
    publisher = Publisher(kafka_bootstrap, "status-test", namespace=namespace)
    await publisher.start(wait=True)
    try:
        from hookrun.events.codec import Record

        headers = [
            ("ce_specversion", b"1.0"),
            ("ce_type", b"hookrun.trigger.launched"),
            ("ce_id", b"x"),
        ]
        await publisher.wait(
            [
                await publisher.send_record(
                    Record(topics.RUNS, bad_key.encode(), b"\x00garbage", headers)
                )
            ]
        )
    finally:
        await publisher.stop()
    run = launched("tok", run_id=bad_key)  # a later, valid event on the same partition
    await publish([run])
    assert info(url, "tok", run.run_id).status_code == 200
    dlq = await read_events(
        kafka_bootstrap,
        topics.named(topics.dlq(topics.RUNS), namespace),
        key=bad_key,
        until=bool,
        timeout_s=15,
    )
    assert [d.value for d in dlq] == [b"\x00garbage"]
    assert "not JSON" in dlq[0].headers["dlq_reason"]


def store_counts(database_url: str) -> dict[str, int]:
    tables = ["runs", "events", "trigger_log", "executions", "actions"]
    if database_url.startswith("sqlite:///"):
        with sqlite3.connect(database_url[len("sqlite:///") :]) as conn:
            counts = {t: conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in tables}
            counts["completed"] = conn.execute(
                "SELECT COUNT(*) FROM runs WHERE info_status = 'completed'"
            ).fetchone()[0]
            counts["offsets"] = conn.execute(
                "SELECT COALESCE(SUM(next_offset), 0) FROM offsets"
            ).fetchone()[0]
            return counts
    import psycopg

    with psycopg.connect(database_url, options="-c search_path=hookrun_status") as conn:
        counts = {t: conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in tables}
        counts["completed"] = conn.execute(
            "SELECT COUNT(*) FROM runs WHERE info_status = 'completed'"
        ).fetchone()[0]
        counts["offsets"] = conn.execute(
            "SELECT COALESCE(SUM(next_offset), 0) FROM offsets"
        ).fetchone()[0]
        return counts


async def test_a_crash_in_the_middle_of_a_batch_loses_and_doubles_nothing(
    start_status, publish, database_url
):
    runs = [launched("tok") for _ in range(400)]
    events: list[Event] = []
    for run in runs:
        events += [run, *run_events(run, [OK])]
    await publish(events)
    proc, _ = start_status(HOOKRUN_STATUS_APPLY_DELAY_MS="1500", HOOKRUN_STATUS_BATCH_RECORDS="300")
    # wait for a first committed batch, then kill -9 while the next one is half applied
    wait_for(lambda: store_counts(database_url)["offsets"] > 0)
    time.sleep(1.0)
    proc.kill()
    partial = store_counts(database_url)
    assert 0 < partial["events"] < len(events)
    assert partial["events"] == partial["offsets"]  # rows and offsets committed together

    start_status()
    wait_for(lambda: store_counts(database_url)["offsets"] == len(events), timeout_s=60)
    counts = store_counts(database_url)
    assert counts["events"] == len(events)
    assert counts["runs"] == counts["trigger_log"] == counts["completed"] == len(runs)
    assert counts["executions"] == counts["actions"] == len(runs)


async def snapshot(url: str, run_ids: list[str]) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=url, headers=ADMIN, timeout=30) as c:
        out: dict[str, Any] = {"pages": [], "log": []}
        cursor = None
        while True:
            page = (
                await c.get(
                    "/api/v1/runs", params={"limit": 7, **({"cursor": cursor} if cursor else {})}
                )
            ).json()
            out["pages"].append(page)
            cursor = page["next_cursor"]
            if not cursor:
                break
        for status in (
            "SUCCESS",
            "FAILURE",
            "pending",
            "completed",
            "error",
            "complete_with_error",
        ):
            out[f"status={status}"] = (
                await c.get("/api/v1/runs", params={"status": status})
            ).json()
        out["log"] = (await c.get("/api/v1/triggers/tok/log", params={"limit": 500})).json()
        for run_id in run_ids:
            out[run_id] = [
                (await c.get(f"/api/v1/runs/{run_id}")).json(),
                (await c.get(f"/api/v1/runs/{run_id}/events")).json(),
                (
                    await c.get(
                        "/api/v0/launch/tok/run/",
                        params={"run_id": run_id},
                        headers={"X-Token": "tok"},
                    )
                ).json(),
            ]
        return out


async def run_rebuild(env: dict[str, str]) -> None:
    import os
    import sys

    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "hookrun.cli",
        "rebuild",
        env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, out.decode()


async def test_rebuild_answers_every_query_exactly_as_the_live_store(
    start_status, publish, backend, database_url
):
    runs = [launched("tok") for _ in range(20)]
    events: list[Event] = []
    for i, run in enumerate(runs):
        outcomes = [[OK], [FAIL], [OK, FAIL], [OK, OK]][i % 4]
        events += [
            run,
            *run_events(run, outcomes, finish=i % 5 != 0, pipeline=i % 3 == 0, deliveries=i % 3),
        ]
    events += [rejected() for _ in range(3)]
    await publish(events)
    proc, url = start_status()
    run_ids = [r.run_id for r in runs]
    wait_for(
        lambda: (
            httpx.get(f"{url}/api/v1/triggers/tok/log", headers=ADMIN).json()["entries"].__len__()
            == 23
        )
    )
    before = await snapshot(url, run_ids)
    env = {k: v for k, v in proc.env.items() if k != "HOOKRUN_STATUS_PORT"}
    env["HOOKRUN_REBUILD_WORKERS"] = "2"  # the parallel rebuild, whatever the machine's cores
    if backend == "sqlite":
        proc.stop()  # a SQLite file is swapped while no instance has it open (docs/status.md)
        await run_rebuild(env)
        _, url = start_status()
    else:
        await run_rebuild(env)  # PostgreSQL: swapped under the running instance
    after = await snapshot(url, run_ids)
    assert after == before
    if backend == "postgres":
        # built before the swap, not kept through the batches: the live schema has them all
        assert await _pg_indexes(database_url) >= {
            m[1] for ddl in SECONDARY_INDEXES if (m := re.search(r"EXISTS (\w+) ON", ddl))
        }


async def _pg_indexes(url: str) -> set[str]:
    import psycopg

    async with await psycopg.AsyncConnection.connect(url) as conn:
        cur = await conn.execute(
            "SELECT indexname FROM pg_indexes WHERE schemaname = 'hookrun_status'"
        )
        return {row[0] for row in await cur.fetchall()}


async def test_two_instances_serve_every_run(start_status, publish, backend):
    (_, url_a), (_, url_b) = start_status(), start_status()
    runs = [launched("tok") for _ in range(24)]
    await publish([e for run in runs for e in (run, *run_events(run, [OK]))])
    if backend == "postgres":
        # one consumer group: the partitions are split between the two instances
        def split() -> bool:
            parts = [set(httpx.get(f"{u}/healthz").json()["partitions"]) for u in (url_a, url_b)]
            return bool(parts[0]) and bool(parts[1]) and not parts[0] & parts[1]

        wait_for(split, timeout_s=30)
    for run in runs:
        for url in (url_a, url_b):
            r = info(url, "tok", run.run_id)
            assert (r.status_code, r.json()["status"]) == (200, "completed"), url


async def test_a_rebuild_whose_worker_fails_leaves_the_live_store_as_it_was(
    kafka_bootstrap, namespace, publish, tmp_path, monkeypatch
):
    import os

    from hookrun.status import rebuild
    from hookrun.status.config import Settings

    runs = [launched("tok") for _ in range(12)]  # spread over the partitions
    await publish([e for run in runs for e in (run, *run_events(run, [OK]))])
    live = tmp_path / "status.db"
    live.write_bytes(b"the live store")
    settings = Settings(
        kafka_bootstrap_servers=kafka_bootstrap,
        hookrun_namespace=namespace,
        hookrun_database_url=f"sqlite:///{live}",
        hookrun_rebuild_workers=2,
    )
    parent, project = os.getpid(), rebuild._project_share

    async def dies_in_the_forked_worker(*args: Any) -> None:
        if os.getpid() != parent:
            raise RuntimeError("a rebuild worker dies")
        await project(*args)

    monkeypatch.setattr(rebuild, "_project_share", dies_in_the_forked_worker)
    with pytest.raises(RuntimeError, match="failed; the live store is unchanged"):
        await rebuild.rebuild(settings)
    assert live.read_bytes() == b"the live store"

    monkeypatch.setattr(rebuild, "_project_share", project)
    assert await rebuild.rebuild(settings) == 12 * len(run_events(runs[0], [OK])) + 12
    with sqlite3.connect(live) as db:
        assert db.execute("SELECT COUNT(*) FROM runs").fetchone() == (12,)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["status.db"]


@pytest.mark.parametrize("backend", [pytest.param("postgres", marks=pytest.mark.postgres)])
async def test_a_lost_database_connection_only_delays_the_projection(
    start_status, publish, database_url
):
    import psycopg

    _, url = start_status()
    first = launched("tok")
    await publish([first])
    wait_for(lambda: info(url, "tok", first.run_id).status_code == 200)
    assert httpx.get(f"{url}/readyz", timeout=10).status_code == 200
    # The server drops every connection of the status service (a restart, a failover).
    server, name = database_url.rsplit("/", 1)
    with psycopg.connect(f"{server}/postgres", autocommit=True) as conn:
        dropped = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
            (name,),
        ).fetchall()
    assert dropped
    second = launched("tok")
    await publish([second])
    # the projection stores it once connected again; run info answers again too
    wait_for(lambda: info(url, "tok", second.run_id).status_code == 200, timeout_s=60)
    assert info(url, "tok", first.run_id).json()["status"] == "pending"
    wait_for(lambda: httpx.get(f"{url}/readyz", timeout=10).status_code == 200)


async def test_a_rebuild_into_a_database_no_instance_has_opened_makes_the_store(
    kafka_bootstrap, namespace, publish, database_url
):
    from hookrun.status.app import open_store
    from hookrun.status.config import Settings
    from hookrun.status.rebuild import rebuild

    runs = [launched("tok") for _ in range(6)]
    await publish([e for run in runs for e in (run, *run_events(run, [OK]))])
    settings = Settings(
        kafka_bootstrap_servers=kafka_bootstrap,
        hookrun_namespace=namespace,
        hookrun_database_url=database_url,
        hookrun_rebuild_workers=1,
    )
    await rebuild(settings)
    store = open_store(database_url)
    await store.open()
    try:
        for run in runs:
            assert (await store.run_info(run.run_id) or {}).get("status") == "completed"
    finally:
        await store.close()
