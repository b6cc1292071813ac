"""Composition root of the status service: build(settings) wires the app; main() serves or rebuilds."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import multiprocessing
import os
import sys
import time
from collections.abc import AsyncIterator, Iterator

import uvicorn
from aiokafka import TopicPartition
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.routing import Route

from hookrun.config import ConfigError, HookrunConfig, load_config
from hookrun.events import topics
from hookrun.events.kafka import Publisher, ensure_topics_forever
from hookrun.status import handlers, routes
from hookrun.status.adapters import EventLog, KafkaEventLog, KafkaLogEnds, LogEnds
from hookrun.status.config import Settings, sqlite_path
from hookrun.status.postgres import PostgresStore
from hookrun.status.projector import Progress, Projector, log_ends
from hookrun.status.sqlite import SqliteStore, remove_database
from hookrun.status.store import SqlStore

log = logging.getLogger(__name__)


def open_store(url: str, *, apply_delay_s: float = 0.0) -> SqlStore:
    """The store a database URL names: ``sqlite:///path`` or ``postgresql://...``."""
    path = sqlite_path(url)
    if path is not None:
        return SqliteStore(path, apply_delay_s=apply_delay_s)
    if url.startswith(("postgresql://", "postgres://")):
        return PostgresStore(url, apply_delay_s=apply_delay_s)
    raise ValueError(f"HOOKRUN_DATABASE_URL must be sqlite:///... or postgresql://..., not {url!r}")


def build(
    settings: Settings,
    config: HookrunConfig,
    *,
    store: SqlStore | None = None,
    event_log: EventLog | None = None,
    ends: LogEnds | None = None,
) -> FastAPI:
    """Return the status app; Kafka adapters and the projection unless fakes are passed in."""
    store = store or open_store(
        settings.hookrun_database_url, apply_delay_s=settings.hookrun_status_apply_delay_ms / 1000
    )
    progress = Progress()
    publisher: Publisher | None = None
    projector: Projector | None = None
    if event_log is None:
        publisher = Publisher(
            settings.kafka_bootstrap_servers,
            "status",
            send_timeout_s=settings.hookrun_kafka_timeout_s,
            namespace=settings.hookrun_namespace,
        )
        event_log = KafkaEventLog(publisher)
        projector = Projector(
            store,
            settings.kafka_bootstrap_servers,
            namespace=settings.hookrun_namespace,
            # One SQLite file per instance: each is a full replica. A shared PostgreSQL store
            # is split between the instances of one consumer group.
            group=None if isinstance(store, SqliteStore) else settings.hookrun_status_group,
            publisher=publisher,
            batch_records=settings.hookrun_status_batch_records,
            progress=progress,
        )
    if ends is None:
        ends = KafkaLogEnds(
            settings.kafka_bootstrap_servers, timeout_s=settings.hookrun_kafka_timeout_s
        )

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await store.open()
        tasks: list[asyncio.Task[None]] = []
        if publisher is not None and projector is not None:
            await ensure_topics_forever(
                settings.kafka_bootstrap_servers, namespace=settings.hookrun_namespace
            )
            await publisher.start()
            tasks.append(asyncio.create_task(projector.run()))
        if isinstance(ends, KafkaLogEnds):
            await ends.start()
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            if isinstance(ends, KafkaLogEnds):
                await ends.stop()
            if publisher is not None:
                await publisher.stop()
            await store.close()

    app = FastAPI(
        title="hookrun status",
        version="0.1.0",
        description="Run info (Valohai contract) and hookrun's admin API. See docs/status.md.",
        lifespan=lifespan,
    )
    token = settings.hookrun_admin_token
    app.state.deps = handlers.Deps(
        config=config,
        store=store,
        log=event_log,
        ends=ends,
        progress=progress,
        namespace=settings.hookrun_namespace,
        admin_token=token.get_secret_value() if token is not None else None,
        catch_up_timeout_s=settings.hookrun_status_catch_up_timeout_s,
    )
    app.state.max_body_bytes = settings.hookrun_max_body_bytes
    app.state.projector = projector

    @app.exception_handler(handlers.ApiError)
    async def api_error(request: Request, exc: handlers.ApiError) -> JSONResponse:
        return JSONResponse(exc.body, exc.status, headers=exc.headers)

    # Run info is served by a plain Starlette route matched before the FastAPI routes, which stay
    # for the OpenAPI document (the gateway does the same for its launch route).
    app.router.routes.append(
        Route("/api/v0/launch/{trigger_id}/run/", routes.serve_run_info, methods=["GET", "POST"])
    )
    app.include_router(routes.router)
    return app


async def rebuild(settings: Settings) -> int:
    """Replay the topics from offset 0 into a fresh store, then swap it in; return the records.

    The partitions are shared out between ``hookrun_rebuild_workers`` processes (default: one
    per CPU). Each projects its share into its own scratch SQLite file (PostgreSQL: into the
    one fresh schema); the files are then merged into the first. A run's events, and so every
    row they make, sit in one partition, so the shares never touch the same row.
    """
    names = [
        topics.named(topics.RUNS, settings.hookrun_namespace),
        topics.named(topics.TRIGGERS, settings.hookrun_namespace),
    ]
    bootstrap = settings.kafka_bootstrap_servers
    ends = await log_ends(bootstrap, names)
    shares = _shares(ends, _workers(settings.hookrun_rebuild_workers))
    # A core to spare per process: each also folds in a thread while it writes.
    spare = len(shares) < _cpus()
    path = sqlite_path(settings.hookrun_database_url)
    if path is not None:
        files = [path.with_name(f"{path.name}.rebuild{i or ''}") for i in range(len(shares))]
        for file in files:
            remove_database(file)  # a CLI command: nothing else waits on this event loop
        stores: list[SqlStore] = [SqliteStore(file, scratch=True) for file in files]
    else:
        import psycopg

        schema = "hookrun_status_rebuild"
        async with await psycopg.AsyncConnection.connect(
            settings.hookrun_database_url, autocommit=True
        ) as conn:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        stores = [
            PostgresStore(settings.hookrun_database_url, schema=schema, readers=1) for _ in shares
        ]
    # The other shares' processes are forked before this one opens its store or starts its
    # consumer: they inherit no connection of the rebuild.
    children = [
        _fork_share(store, settings, share, spare)
        for store, share in zip(stores[1:], shares[1:], strict=True)
    ]
    fresh = stores[0]
    try:
        await fresh.open()
        await _project_share(fresh, settings, shares[0], spare)
        failed = [c.pid for c in await asyncio.gather(*map(_joined, children)) if c.exitcode]
        if failed:
            raise RuntimeError(f"rebuild worker(s) {failed} failed; the live store is unchanged")
    except BaseException:
        for child in children:
            child.kill()
        await fresh.close()
        raise
    if isinstance(fresh, SqliteStore):
        assert path is not None
        fresh.merge_rebuilt(files[1:])
        fresh.finish_rebuild(path)
    else:
        assert isinstance(fresh, PostgresStore)
        await fresh.swap_into("hookrun_status")
        await fresh.close()
    return sum(ends.values())


def _workers(configured: int) -> int:
    """How many processes rebuild: ``configured``, else one per CPU; 1 where fork is missing."""
    if "fork" not in multiprocessing.get_all_start_methods():
        return 1
    return configured or _cpus()


def _cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _shares(ends: dict[TopicPartition, int], workers: int) -> list[dict[TopicPartition, int]]:
    """Partitions (and their log ends) dealt out so that each share has about as many records.

    Never more shares than partitions with records, never fewer than one.
    """
    shares: list[dict[TopicPartition, int]] = [{} for _ in range(max(1, workers))]
    load = [0] * len(shares)
    for tp, end in sorted(ends.items(), key=lambda item: (-item[1], item[0])):
        i = load.index(min(load))
        shares[i][tp] = end
        load[i] += end
    return [share for share, n in zip(shares, load, strict=True) if n] or [shares[0]]


async def _project_share(
    store: SqlStore, settings: Settings, share: dict[TopicPartition, int], spare: bool
) -> None:
    """Project the partitions of ``share`` into ``store`` (open) up to their log ends.

    ``spare``: there are more cores than rebuilding processes (fold in a thread).
    """
    projector = Projector(
        store,
        settings.kafka_bootstrap_servers,
        namespace=settings.hookrun_namespace,
        batch_records=5000,
        trusted=True,
        partitions=share,
        fold_in_thread=spare,
    )

    def done() -> bool:
        at = projector.positions
        return all(at.get((tp.topic, tp.partition), 0) >= end for tp, end in share.items())

    with _no_cyclic_collections(), _short_switch_interval():
        await projector.run(until=done, read_to=share)


def _fork_share(
    store: SqlStore, settings: Settings, share: dict[TopicPartition, int], spare: bool
) -> multiprocessing.process.BaseProcess:
    """A forked process projecting ``share`` into ``store``: imports and settings inherited.

    Spawning one would import the service again first (about a second, a third of a
    rebuild of 70,000 records).
    """

    async def project() -> None:
        await store.open()
        try:
            await _project_share(store, settings, share, spare)
        finally:
            await store.close()

    def main() -> None:
        asyncio.run(project())

    child = multiprocessing.get_context("fork").Process(
        target=main, name="hookrun-status-rebuild", daemon=True
    )
    child.start()
    return child


async def _joined(
    child: multiprocessing.process.BaseProcess,
) -> multiprocessing.process.BaseProcess:
    await asyncio.to_thread(child.join)
    return child


@contextlib.contextmanager
def _no_cyclic_collections() -> Iterator[None]:
    """Leave the cyclic garbage collector off meanwhile; reference counting frees the rest.

    A replay allocates a few objects per record that reference counting frees, while a batch
    or two of records stay alive. Collecting every 700 allocations walked them again and again
    (about a fifth of a rebuild's CPU time); every 70,000 still made a collection or two that
    walked everything alive (70-84 ms of a 1.5-1.7 s share of 33,700 records, timed with
    ``gc.callbacks``). A replay makes hardly any cycles (361 unreachable objects after 67,500
    records), so the collector has nothing to find meanwhile; they are collected afterwards.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@contextlib.contextmanager
def _short_switch_interval(seconds: float = 0.0005) -> Iterator[None]:
    """Let a thread waiting for the GIL get it after 0.5 ms instead of 5 ms meanwhile.

    The SQLite writer releases the GIL for each statement it executes and must win it back
    from the thread folding the next batch, which holds it in pure Python: each statement
    waited up to the whole switch interval.
    """
    saved = sys.getswitchinterval()
    sys.setswitchinterval(seconds)
    try:
        yield
    finally:
        sys.setswitchinterval(saved)


def main(argv: list[str] | None = None) -> None:
    """``python -m hookrun.status`` serves; ``python -m hookrun.status rebuild`` rebuilds."""
    args = sys.argv[1:] if argv is None else argv
    settings = Settings()
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s status %(name)s: %(message)s",
    )
    if args[:1] == ["rebuild"]:
        started = time.monotonic()
        count = asyncio.run(rebuild(settings))
        print(
            f"hookrun status: rebuilt {settings.hookrun_database_url} from {count} records "
            f"in {time.monotonic() - started:.1f}s"
        )
        return
    if args and args[0] != "serve":
        print("usage: python -m hookrun.status [serve|rebuild]", file=sys.stderr)
        raise SystemExit(2)
    try:
        config = load_config(settings.hookrun_config)
    except ConfigError as exc:
        print(f"hookrun status: invalid config\n{exc}", file=sys.stderr)
        raise SystemExit(2) from exc
    uvicorn.run(
        build(settings, config),
        host=settings.hookrun_status_host,
        port=settings.hookrun_status_port,
        loop="uvloop",
        http="httptools",
        access_log=settings.hookrun_access_log,
        log_level=settings.log_level.lower(),
        timeout_graceful_shutdown=10,
    )
