"""The health endpoint of a consuming service: ``GET /healthz`` as one JSON object."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from typing import Any

import orjson


async def serve_health(
    port: int, status: Callable[[], Mapping[str, Any]], host: str = "127.0.0.1"
) -> asyncio.Server:
    """Serve ``status()`` as JSON to any request on ``host:port``; return the started server.

    No web framework for one JSON line: every request is answered 200 with the status of the
    moment and the connection closed. Close the returned server to stop.
    """

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            await reader.readuntil(b"\r\n\r\n")
            body = orjson.dumps(dict(status()))
            writer.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n"
                + f"content-length: {len(body)}\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        writer.close()

    return await asyncio.start_server(answer, host, port)
