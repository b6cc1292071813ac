"""The health endpoints of a consuming service: ``GET /healthz`` and ``GET /readyz``."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from typing import Any

import orjson


async def serve_health(
    port: int, status: Callable[[], Mapping[str, Any]], host: str = "127.0.0.1"
) -> asyncio.Server:
    """Serve the service's ``status()`` on ``host:port``; return the started server.

    ``GET /readyz`` answers 200 ``{"ready": true}`` while ``status()["ready"]`` is true and 503
    otherwise (readiness); any other request answers 200 with the whole status (liveness). No web
    framework for one JSON line: the connection is closed after the answer. Close the returned
    server to stop.
    """

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            head = await reader.readuntil(b"\r\n\r\n")
            now = dict(status())
            if head.split(b" ", 2)[1:2] == [b"/readyz"]:
                ready = bool(now.get("ready"))
                line = b"200 OK" if ready else b"503 Service Unavailable"
                body = orjson.dumps({"ready": ready})
            else:
                line, body = b"200 OK", orjson.dumps(now)
            writer.write(
                b"HTTP/1.1 " + line + b"\r\ncontent-type: application/json\r\n"
                b"connection: close\r\n" + f"content-length: {len(body)}\r\n\r\n".encode() + body
            )
            await writer.drain()
        writer.close()

    return await asyncio.start_server(answer, host, port)
