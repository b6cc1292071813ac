"""The consuming services' health endpoints over a real socket: liveness and readiness."""

from __future__ import annotations

import httpx

from hookrun.dev.kafka_net import free_port
from hookrun.events.health import serve_health


async def test_readyz_is_503_until_the_service_is_ready_and_healthz_always_200():
    state = {"ready": False, "partitions": 0}
    port = free_port()
    server = await serve_health(port, lambda: state)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            not_ready = await client.get("/readyz")
            assert (not_ready.status_code, not_ready.json()) == (503, {"ready": False})
            alive = await client.get("/healthz")
            assert (alive.status_code, alive.json()) == (200, state)
            state["ready"] = True
            ready = await client.get("/readyz")
            assert (ready.status_code, ready.json()) == (200, {"ready": True})
            state["ready"] = False  # e.g. Kafka gone: not ready again
            assert (await client.get("/readyz")).status_code == 503
    finally:
        server.close()
        await server.wait_closed()


async def test_metrics_are_served_beside_the_health_endpoints():
    port = free_port()
    server = await serve_health(port, lambda: {"ready": True})
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            scraped = await client.get("/metrics")
    finally:
        server.close()
        await server.wait_closed()
    assert scraped.status_code == 200
    assert scraped.headers["content-type"].startswith("text/plain")
    assert "hookrun_consumer_lag" in scraped.text
