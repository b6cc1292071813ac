"""Composition root of the gateway: build(settings) wires the app; main() serves it."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import sys
from collections.abc import AsyncIterator
from http.cookiejar import CookieJar, DefaultCookiePolicy

import httpx
import uvicorn
from fastapi import FastAPI
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from hookrun.config import ConfigError, HookrunConfig, load_config
from hookrun.events import logs, tracing
from hookrun.events.configs import ConfigRecorded
from hookrun.events.kafka import Publisher, ensure_topics_forever
from hookrun.events.transactions import TransactionalPublisher, transactional_id
from hookrun.gateway import handlers, metrics, routes, server
from hookrun.gateway.adapters import DeliveryIndex, EventLog, KafkaDeliveryIndex, KafkaEventLog
from hookrun.gateway.config import Settings


class GatewayApp(FastAPI):
    """The gateway's FastAPI app, with launches answered by ``launch_endpoint`` before FastAPI.

    FastAPI's routing costs as much CPU per launch as the launch rules (decision 0009). A launch
    under a root path is left to FastAPI, whose launch routes (``routes.LaunchRoute``, also the
    launch's /openapi.json entry) hand it to the same endpoint.
    """

    launch_endpoint: routes.LaunchEndpoint | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        endpoint = self.launch_endpoint
        if endpoint is not None:
            trigger_id = routes.launch_target(scope)
            if trigger_id is not None:
                await endpoint(trigger_id, scope, receive, send)
                return
        await super().__call__(scope, receive, send)


async def _start_after(publisher: Publisher, together: TransactionalPublisher) -> None:
    await publisher.start(wait=True)
    await together.start()


def _no_cookies() -> CookieJar:
    """A jar that keeps nothing, for the clients that forward to the status service.

    They serve every browser at once: a dashboard session cookie kept from one browser's
    sign-in would be sent with everyone's requests. Set-Cookie is relayed to the browser only.
    """
    return CookieJar(DefaultCookiePolicy(allowed_domains=[]))


def build(
    settings: Settings,
    config: HookrunConfig,
    *,
    event_log: EventLog | None = None,
    deliveries: DeliveryIndex | None = None,
    status_transport: httpx.AsyncBaseTransport | None = None,
    freeze_heap: bool = False,
) -> GatewayApp:
    """Return the gateway app; Kafka adapters unless fakes are passed in (unit tests).

    ``freeze_heap`` (the server process, not tests) moves everything alive once the app has
    started out of the garbage collector's reach (``gc.freeze``): a full collection of that
    heap would stall every launch in flight (decision 0010).
    """
    # httpx logs every forwarded request's URL at INFO, and a run-info query may carry a
    # trigger's static secret (?token=...): the gateway logs no URL of its own either.
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)
    if (event_log is None) != (deliveries is None):
        # Half fakes would reach for a broker at the default address: a unit test that passes
        # only when a dev broker happens to run there.
        raise TypeError("pass both event_log and deliveries, or neither")
    publisher: Publisher | None = None
    together: TransactionalPublisher | None = None
    if event_log is None:
        publisher = Publisher(
            settings.kafka_bootstrap_servers,
            "gateway",
            send_timeout_s=settings.hookrun_kafka_timeout_s,
            namespace=settings.hookrun_namespace,
            linger_ms=settings.hookrun_kafka_linger_ms,
            # On the log before any launch that names the version: every runner can find it.
            first=[ConfigRecorded(config_version=config.config_version, text=config.source_text)],
        )
        # A launch with a delivery id commits TriggerLaunched and its dedupe record together
        # (decision 0033); the id is stable across a restart, so a restart aborts what a
        # crashed gateway left open.
        together = TransactionalPublisher(
            settings.kafka_bootstrap_servers,
            "gateway",
            transactional_id(settings.hookrun_namespace, "gateway", str(settings.hookrun_port)),
            send_timeout_s=settings.hookrun_kafka_timeout_s,
            namespace=settings.hookrun_namespace,
        )
        # The producer's own request timeout fails a send first; this bounds the wait anyway.
        event_log = KafkaEventLog(
            publisher, ack_timeout_s=settings.hookrun_kafka_timeout_s + 1, together=together
        )
    index = deliveries
    if index is None:
        index = KafkaDeliveryIndex(
            settings.kafka_bootstrap_servers,
            window_s=settings.hookrun_dedupe_window_s,
            catch_up_timeout_s=settings.hookrun_kafka_timeout_s,
            namespace=settings.hookrun_namespace,
        )

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        topics_task = None
        if publisher is not None:
            topics_task = asyncio.create_task(
                ensure_topics_forever(
                    settings.kafka_bootstrap_servers, namespace=settings.hookrun_namespace
                )
            )
            await publisher.start()
        together_start: asyncio.Task[None] | None = None
        if publisher is not None and together is not None:
            # Launches with a delivery id go through this producer: only once the publisher
            # has recorded the config version.
            together_start = asyncio.create_task(_start_after(publisher, together))
        if isinstance(index, KafkaDeliveryIndex):
            await index.start()
        app.state.status_client = httpx.AsyncClient(
            base_url=settings.hookrun_status_url,
            timeout=30,
            transport=status_transport,
            cookies=_no_cookies(),
        )
        # Live feeds hold their connection open: a pool of their own, so that open dashboards
        # never take the connections run info and the admin API are forwarded on.
        app.state.feed_client = httpx.AsyncClient(
            base_url=settings.hookrun_status_url,
            timeout=30,
            limits=httpx.Limits(max_connections=routes.MAX_FEEDS),
            transport=status_transport,
            cookies=_no_cookies(),
        )
        if freeze_heap:
            gc.collect()
            gc.freeze()
        try:
            yield
        finally:
            await app.state.status_client.aclose()
            await app.state.feed_client.aclose()
            for task in (topics_task, together_start):
                if task is not None:
                    task.cancel()
            if isinstance(index, KafkaDeliveryIndex):
                await index.stop()
            # The counts of the window in progress, before the appends are drained.
            app.state.deps.trigger_log.flush()
            if isinstance(event_log, KafkaEventLog):
                await event_log.drain()
            if together is not None:
                await together.stop()
            if publisher is not None:
                await publisher.stop()

    app = GatewayApp(
        title="hookrun gateway",
        version="0.1.0",
        description="Turns inbound webhooks into runs. See README.md and docs/.",
        lifespan=lifespan,
    )
    app.state.deps = handlers.Deps(
        config=config,
        log=event_log,
        deliveries=index,
        retry_after_s=settings.hookrun_retry_after_s,
        max_json_depth=settings.hookrun_max_json_depth,
        rejection_log_limit=settings.hookrun_rejection_log_limit,
        rejection_log_window_s=settings.hookrun_rejection_log_window_s,
    )
    app.state.max_body_bytes = settings.hookrun_max_body_bytes
    app.state.publisher = publisher
    app.state.together = together
    #: Whether the server is shutting down: relayed live feeds end then (main() sets it).
    app.state.closing = lambda: False
    app.launch_endpoint = routes.LaunchEndpoint(app.state.deps, settings.hookrun_max_body_bytes)
    app.router.routes.extend(routes.launch_routes.routes)
    app.router.routes.append(Route("/metrics", metrics.serve_metrics, methods=["GET"]))
    app.include_router(routes.router)
    return app


def main() -> None:
    """Serve the gateway with the settings from the environment."""
    settings = Settings()
    logs.configure("gateway", settings.log_level, settings.log_format)
    tracing.start("gateway")
    try:
        config = load_config(settings.hookrun_config)
    except ConfigError as exc:
        print(f"hookrun gateway: invalid config\n{exc}", file=sys.stderr)
        raise SystemExit(2) from exc
    app = build(settings, config, freeze_heap=True)
    # uvicorn's own lines go through the handler logs.configure set, in LOG_FORMAT.
    serving = uvicorn.Server(
        uvicorn.Config(app, log_config=None, **server.uvicorn_options(settings))
    )
    # Relayed live feeds would otherwise hold a shutdown for the whole graceful timeout.
    app.state.closing = lambda: serving.should_exit
    serving.run()


if __name__ == "__main__":
    main()
