"""The operations endpoints of a consuming service: ``GET /healthz``, ``/readyz`` and ``/metrics``."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from typing import Any

import orjson

from hookrun.events import metrics


async def serve_health(
    port: int, status: Callable[[], Mapping[str, Any]], host: str = "127.0.0.1"
) -> asyncio.Server:
    """Serve the service's ``status()`` and its metrics on ``host:port``; return the server.

    ``GET /readyz`` answers 200 ``{"ready": true}`` while ``status()["ready"]`` is true and 503
    otherwise (readiness); ``GET /metrics`` the process's Prometheus metrics; any other request
    answers 200 with the whole status (liveness). No web framework for one answer: the
    connection is closed after it. Close the returned server to stop.
    """

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            head = await reader.readuntil(b"\r\n\r\n")
            path = head.split(b" ", 2)[1:2]
            content_type = "application/json"
            if path == [b"/metrics"]:
                line = b"200 OK"
                body, content_type = metrics.exposition()
            elif path == [b"/readyz"]:
                ready = bool(status().get("ready"))
                line = b"200 OK" if ready else b"503 Service Unavailable"
                body = orjson.dumps({"ready": ready})
            else:
                line, body = b"200 OK", orjson.dumps(dict(status()))
            writer.write(
                b"HTTP/1.1 "
                + line
                + f"\r\ncontent-type: {content_type}\r\n".encode()
                + b"connection: close\r\n"
                + f"content-length: {len(body)}\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        writer.close()

    return await asyncio.start_server(answer, host, port)
