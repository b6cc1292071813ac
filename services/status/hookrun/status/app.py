"""Composition root of the status service: build(settings) wires the app; main() serves or rebuilds."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.routing import Route

from hookrun.config import ConfigError, HookrunConfig, load_config
from hookrun.events import topics
from hookrun.events.kafka import Publisher, ensure_topics_forever
from hookrun.status import handlers, routes
from hookrun.status.adapters import EventLog, KafkaEventLog, KafkaLogEnds, LogEnds
from hookrun.status.config import Settings, sqlite_path
from hookrun.status.projector import Progress, Projector, log_ends
from hookrun.status.store import PostgresStore, SqliteStore, SqlStore, open_store

log = logging.getLogger(__name__)


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
    """Replay the topics from offset 0 into a fresh store, then swap it in; return the records."""
    names = [
        topics.named(topics.RUNS, settings.hookrun_namespace),
        topics.named(topics.TRIGGERS, settings.hookrun_namespace),
    ]
    bootstrap = settings.kafka_bootstrap_servers
    ends = await log_ends(bootstrap, names)
    path = sqlite_path(settings.hookrun_database_url)
    fresh: SqlStore
    if path is not None:
        fresh_path = path.with_name(path.name + ".rebuild")
        for suffix in ("", "-wal", "-shm"):
            # A CLI command: nothing else is waiting on this event loop.
            Path(str(fresh_path) + suffix).unlink(missing_ok=True)  # noqa: ASYNC240
        fresh = SqliteStore(fresh_path, scratch=True)
    else:
        import psycopg

        schema = "hookrun_status_rebuild"
        async with await psycopg.AsyncConnection.connect(
            settings.hookrun_database_url, autocommit=True
        ) as conn:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        fresh = PostgresStore(settings.hookrun_database_url, schema=schema)
    await fresh.open()
    projector = Projector(
        fresh, bootstrap, namespace=settings.hookrun_namespace, batch_records=5000, trusted=True
    )

    def done() -> bool:
        at = projector.positions
        return all(at.get((tp.topic, tp.partition), 0) >= end for tp, end in ends.items())

    with _few_collections(), _short_switch_interval():
        await projector.run(until=done, read_to=ends)
    if isinstance(fresh, SqliteStore):
        assert path is not None
        fresh.finish_rebuild(path)
    else:
        assert isinstance(fresh, PostgresStore)
        await fresh.swap_into("hookrun_status")
        await fresh.close()
    return sum(ends.values())


@contextlib.contextmanager
def _few_collections() -> Iterator[None]:
    """Run the cyclic garbage collector 100 times less often meanwhile.

    A replay allocates a few objects per record that reference counting frees, while a batch
    or two of records stay alive: collecting every 700 allocations walked them again and again
    (about a fifth of a rebuild's CPU time).
    """
    saved = gc.get_threshold()
    gc.set_threshold(100 * saved[0], *saved[1:])
    try:
        yield
    finally:
        gc.set_threshold(*saved)


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
