"""Composition root of the gateway: build(settings) wires the app; main() serves it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import AsyncIterator

import httpx
import uvicorn
from fastapi import FastAPI
from starlette.routing import Route

from hookrun.config import ConfigError, HookrunConfig, load_config
from hookrun.events.kafka import Publisher, ensure_topics_forever
from hookrun.gateway import handlers, routes
from hookrun.gateway.adapters import DeliveryIndex, EventLog, KafkaDeliveryIndex, KafkaEventLog
from hookrun.gateway.config import Settings


def build(
    settings: Settings,
    config: HookrunConfig,
    *,
    event_log: EventLog | None = None,
    deliveries: DeliveryIndex | None = None,
    status_transport: httpx.AsyncBaseTransport | None = None,
) -> FastAPI:
    """Return the gateway app; Kafka adapters unless fakes are passed in (unit tests)."""
    publisher: Publisher | None = None
    if event_log is None:
        publisher = Publisher(
            settings.kafka_bootstrap_servers,
            "gateway",
            send_timeout_s=settings.hookrun_kafka_timeout_s,
            namespace=settings.hookrun_namespace,
            linger_ms=settings.hookrun_kafka_linger_ms,
        )
        event_log = KafkaEventLog(publisher)
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
        if isinstance(index, KafkaDeliveryIndex):
            await index.start()
        app.state.status_client = httpx.AsyncClient(
            base_url=settings.hookrun_status_url, timeout=30, transport=status_transport
        )
        try:
            yield
        finally:
            await app.state.status_client.aclose()
            if topics_task is not None:
                topics_task.cancel()
            if isinstance(index, KafkaDeliveryIndex):
                await index.stop()
            if isinstance(event_log, KafkaEventLog):
                await event_log.drain()
            if publisher is not None:
                await publisher.stop()

    app = FastAPI(
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
    )
    app.state.max_body_bytes = settings.hookrun_max_body_bytes
    app.state.publisher = publisher
    # The launch paths are served by a plain Starlette route matched before the FastAPI routes,
    # which stay for validation-free documentation in /openapi.json.
    for path in ("/api/v0/launch/{trigger_id}/", "/api/v0/launch/{trigger_id}"):
        app.router.routes.append(Route(path, routes.serve_launch, methods=["POST"]))
    app.include_router(routes.router)
    return app


def main() -> None:
    """Serve the gateway with the settings from the environment."""
    settings = Settings()
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s gateway %(name)s: %(message)s",
    )
    try:
        config = load_config(settings.hookrun_config)
    except ConfigError as exc:
        print(f"hookrun gateway: invalid config\n{exc}", file=sys.stderr)
        raise SystemExit(2) from exc
    uvicorn.run(
        build(settings, config),
        host=settings.hookrun_host,
        port=settings.hookrun_port,
        loop="uvloop",
        http="httptools",
        access_log=settings.hookrun_access_log,
        log_level=settings.log_level.lower(),
        timeout_graceful_shutdown=10,
    )


if __name__ == "__main__":
    main()
