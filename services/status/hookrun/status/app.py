"""Composition root of the status service: build(settings) wires the app; main() serves or rebuilds."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import sys
from collections.abc import AsyncIterator

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.routing import Route
from starlette.staticfiles import StaticFiles
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from hookrun.config import ConfigError, HookrunConfig, load_config
from hookrun.config.sealing import sealer_of
from hookrun.events import logs, topics, tracing
from hookrun.events.configs import ConfigRecorded
from hookrun.events.kafka import Publisher, TopicTable, ensure_topics_forever
from hookrun.events.subscriptions import SubscriptionStates
from hookrun.status import dashboard, guard, handlers, metrics, retention, routes
from hookrun.status.adapters import (
    EventLog,
    FakeScheduleBook,
    KafkaEventLog,
    KafkaLogEnds,
    KafkaScheduleBook,
    LogEnds,
    ScheduleBook,
)
from hookrun.status.config import Settings, shown_url, sqlite_path
from hookrun.status.postgres import PostgresStore
from hookrun.status.projector import Progress, Projector
from hookrun.status.sqlite import SqliteStore
from hookrun.status.store import SqlStore

log = logging.getLogger(__name__)

#: Shortest admin token that passes without a WARNING at start: 24 random characters are out of
#: reach of the guesses the throttle lets through from any number of addresses.
MIN_TOKEN_CHARS = 24
#: How long the subscriptions table's fetch waits at the broker when there is nothing new
#: (answered at once when records arrive; a long wait only makes the idle table cheap).
IDLE_TABLE_FETCH_WAIT_MS = 500


def open_store(url: str, *, apply_delay_s: float = 0.0) -> SqlStore:
    """The store a database URL names: ``sqlite:///path`` or ``postgresql://...``."""
    path = sqlite_path(url)
    if path is not None:
        return SqliteStore(path, apply_delay_s=apply_delay_s)
    if url.startswith(("postgresql://", "postgres://")):
        return PostgresStore(url, apply_delay_s=apply_delay_s)
    raise ValueError(
        f"HOOKRUN_DATABASE_URL must be sqlite:///... or postgresql://..., not {shown_url(url)!r}"
    )


def build(
    settings: Settings,
    config: HookrunConfig,
    *,
    store: SqlStore | None = None,
    event_log: EventLog | None = None,
    ends: LogEnds | None = None,
    schedules: ScheduleBook | None = None,
) -> FastAPI:
    """Return the status app; Kafka adapters and the projection unless fakes are passed in."""
    if (event_log is None) != (ends is None):
        # Half fakes would reach for a broker at the default address (see the gateway's build).
        raise TypeError("pass both event_log and ends, or neither")
    store = store or open_store(
        settings.hookrun_database_url, apply_delay_s=settings.hookrun_status_apply_delay_ms / 1000
    )
    progress = Progress()
    publisher: Publisher | None = None
    projector: Projector | None = None
    table: TopicTable | None = None
    followed = SubscriptionStates()
    book: KafkaScheduleBook | None = None
    if event_log is None:
        publisher = Publisher(
            settings.kafka_bootstrap_servers,
            "status",
            send_timeout_s=settings.hookrun_kafka_timeout_s,
            namespace=settings.hookrun_namespace,
            # Test launches name this version: it is on the log before any of them.
            first=[ConfigRecorded(config_version=config.config_version, text=config.source_text)],
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
        metrics.watch(projector)
        table = TopicTable(
            settings.kafka_bootstrap_servers,
            "status",
            topics.named(topics.SUBSCRIPTIONS, settings.hookrun_namespace),
            followed.apply,
            fetch_max_wait_ms=IDLE_TABLE_FETCH_WAIT_MS,
        )
        book = KafkaScheduleBook(
            settings.kafka_bootstrap_servers,
            namespace=settings.hookrun_namespace,
            timeout_s=settings.hookrun_status_catch_up_timeout_s,
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
            if table is not None:
                await table.start()
            tasks.append(asyncio.create_task(projector.run()))
            # Deletes trigger-log entries that started no run once past their retention.
            tasks.append(asyncio.create_task(retention.keep_trigger_log(store, settings)))
        if book is not None:
            await book.start()
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
            if table is not None:
                await table.stop()
            if book is not None:
                await book.stop()
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
        max_json_depth=settings.hookrun_max_json_depth,
        subscriptions=followed,
        schedules=schedules or book or FakeScheduleBook(event_log),
        sealer=sealer_of(settings.hookrun_secrets_key),
    )
    app.state.max_body_bytes = settings.hookrun_max_body_bytes
    app.state.auth_throttle = guard.AuthThrottle(
        settings.hookrun_admin_max_failures, settings.hookrun_admin_failure_window_s
    )
    app.state.projector = projector
    app.state.templates = dashboard.environment()
    app.state.sessions = None
    if token is not None:
        key = settings.hookrun_ui_session_key
        app.state.sessions = dashboard.Sessions(
            key.get_secret_value().encode() if key is not None else secrets.token_bytes(32),
            token.get_secret_value(),
            settings.hookrun_ui_session_ttl_s,
        )
    #: Whether the server is shutting down: live feeds end then (main() sets it).
    app.state.closing = lambda: False

    @app.exception_handler(handlers.ApiError)
    async def api_error(request: Request, exc: handlers.ApiError) -> JSONResponse:
        return JSONResponse(exc.body, exc.status, headers=exc.headers)

    # Run info is served by a plain Starlette route matched before the FastAPI routes, which stay
    # for the OpenAPI document (the gateway does the same for its launch route).
    app.router.routes.append(
        Route("/api/v0/launch/{trigger_id}/run/", routes.serve_run_info, methods=["GET", "POST"])
    )
    app.router.routes.append(Route("/metrics", metrics.serve_metrics, methods=["GET"]))
    app.include_router(routes.router)
    app.include_router(dashboard.ui)
    app.mount("/ui/static", StaticFiles(directory=dashboard.STATIC), name="ui-static")
    # The client address of every route (IP allow-lists, the admin throttle) is the peer's, or
    # the X-Forwarded-For of a trusted proxy: here rather than in uvicorn, so tests see it too.
    app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=settings.forwarded_allow_ips)
    return app


def warn_of_a_short_token(settings: Settings) -> None:
    """Log a WARNING when HOOKRUN_ADMIN_TOKEN is shorter than ``MIN_TOKEN_CHARS``."""
    token = settings.hookrun_admin_token
    if token is not None and len(token.get_secret_value()) < MIN_TOKEN_CHARS:
        log.warning(
            "HOOKRUN_ADMIN_TOKEN has %d characters: use %d or more random ones"
            " (e.g. `openssl rand -hex 24`); wrong tokens are throttled per address, not"
            " across addresses",
            len(token.get_secret_value()),
            MIN_TOKEN_CHARS,
        )


def main(argv: list[str] | None = None) -> None:
    """``python -m hookrun.status`` serves (``hookrun rebuild`` rebuilds its store)."""
    args = sys.argv[1:] if argv is None else argv
    settings = Settings()
    logs.configure("status", settings.log_level, settings.log_format)
    tracing.start("status")
    if args and args[0] != "serve":
        print(
            "usage: python -m hookrun.status [serve]  (rebuild: hookrun rebuild)", file=sys.stderr
        )
        raise SystemExit(2)
    try:
        config = load_config(settings.hookrun_config)
    except ConfigError as exc:
        print(f"hookrun status: invalid config\n{exc}", file=sys.stderr)
        raise SystemExit(2) from exc
    warn_of_a_short_token(settings)
    app = build(settings, config)
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=settings.hookrun_status_host,
            port=settings.hookrun_status_port,
            loop="uvloop",
            http="httptools",
            access_log=settings.hookrun_access_log,
            log_level=logs.level_of(settings.log_level),
            # uvicorn's own lines go through the handler logs.configure set, in LOG_FORMAT.
            log_config=None,
            timeout_graceful_shutdown=10,
            proxy_headers=False,  # build() applies FORWARDED_ALLOW_IPS itself
        )
    )
    # Open live feeds would otherwise hold a shutdown for the whole graceful timeout.
    app.state.closing = lambda: server.should_exit
    server.run()
