"""A lean HTTP/1.1 connection pool for one subscription (O(1) per request) and an asyncio stream.

httpcore's ``AsyncConnectionPool`` re-examines every connection on each request and on each
response close (``has_expired`` polls each socket through anyio's attribute lookup), and each
pool request sets up synchronization primitives that try ``import sniffio`` (not installed:
a failed import walks ``sys.path`` every time). With 32 keep-alive connections that cost about
ten times the rest of an attempt (docs/notifier.md, Performance). This pool keeps the
connections httpcore makes (``AsyncHTTPConnection``: TCP through the SSRF-guarded backend, TLS,
HTTP/1.1 via h11) and only replaces the bookkeeping: a semaphore bounds the connections in use
and a LIFO stack holds the idle ones; only the connection about to be reused is checked.

:class:`AsyncioStream` is httpcore's network stream over plain asyncio streams, for the
SSRF-guarded backend: anyio's stream adds a cancel scope and a checkpoint to every read and
write, a fifth of what is left of an attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import AsyncIterator, Iterable
from typing import Any

import httpcore
from httpcore._utils import is_socket_readable


class LeanPool:
    """Drop-in for httpx's ``transport._pool``: at most ``max_connections`` requests at a time."""

    def __init__(
        self,
        *,
        ssl_context: ssl.SSLContext | None,
        max_connections: int,
        max_keepalive_connections: int,
        keepalive_expiry: float | None,
        network_backend: httpcore.AsyncNetworkBackend,
    ) -> None:
        self._ssl_context = ssl_context
        self._slots = asyncio.Semaphore(max_connections)
        self._max_idle = max_keepalive_connections
        self._keepalive_expiry = keepalive_expiry
        self._backend = network_backend
        self._idle: list[httpcore.AsyncHTTPConnection] = []
        self._closed = False
        self._closing: set[asyncio.Task[None]] = set()

    async def handle_async_request(self, request: httpcore.Request) -> httpcore.Response:
        pool_timeout = request.extensions.get("timeout", {}).get("pool")
        try:
            async with asyncio.timeout(pool_timeout):
                await self._slots.acquire()
        except TimeoutError as exc:
            raise httpcore.PoolTimeout("no connection slot became free in time") from exc
        connection: httpcore.AsyncHTTPConnection | None = None
        try:
            connection = self._reuse(request.url.origin)
            if connection is None:
                connection = httpcore.AsyncHTTPConnection(
                    request.url.origin,
                    ssl_context=self._ssl_context,
                    keepalive_expiry=self._keepalive_expiry,
                    http1=True,
                    http2=False,
                    network_backend=self._backend,
                )
            response = await connection.handle_async_request(request)
        except BaseException:
            self._slots.release()
            if connection is not None:
                # Interrupted mid-request (timeout, cancel): the connection's state is unknown.
                await asyncio.shield(_close_quietly(connection))
            raise
        return httpcore.Response(
            status=response.status,
            headers=response.headers,
            content=_ReleasingStream(self, connection, response.stream),
            extensions=response.extensions,
        )

    def _reuse(self, origin: httpcore.Origin) -> httpcore.AsyncHTTPConnection | None:
        while self._idle:
            connection = self._idle.pop()
            # One socket poll for the one connection reused: a server-closed keep-alive
            # connection (readable at EOF) or an expired one is dropped, not written to.
            if (
                connection.can_handle_request(origin)
                and connection.is_available()
                and not connection.has_expired()
            ):
                return connection
            self._close_later(connection)
        return None

    def _release(self, connection: httpcore.AsyncHTTPConnection) -> None:
        self._slots.release()
        if self._closed or not connection.is_idle() or len(self._idle) >= self._max_idle:
            if not connection.is_closed():
                self._close_later(connection)
            return
        self._idle.append(connection)

    def _close_later(self, connection: httpcore.AsyncHTTPConnection) -> None:
        task = asyncio.get_running_loop().create_task(_close_quietly(connection))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def aclose(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        for connection in idle:
            await _close_quietly(connection)

    async def __aenter__(self) -> LeanPool:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class _ReleasingStream:
    """The response body; closing it hands the connection back to the pool (once)."""

    def __init__(
        self, pool: LeanPool, connection: httpcore.AsyncHTTPConnection, inner: Any
    ) -> None:
        self._pool = pool
        self._connection = connection
        self._inner = inner
        self._released = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._inner:
            yield chunk

    async def aclose(self) -> None:
        if self._released:
            return
        self._released = True
        try:
            await self._inner.aclose()
        finally:
            self._pool._release(self._connection)


async def _close_quietly(connection: httpcore.AsyncHTTPConnection) -> None:
    # Closing a broken connection may fail; closed is all that was wanted.
    with contextlib.suppress(Exception):
        await connection.aclose()


class AsyncioStream(httpcore.AsyncNetworkStream):
    """httpcore network stream over an asyncio StreamReader/StreamWriter pair."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    @classmethod
    async def connect(
        cls,
        address: str,
        port: int,
        timeout: float | None,  # noqa: ASYNC109 -- httpcore's backend interface
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> AsyncioStream:
        """Open a TCP connection to exactly ``address`` (no name resolution happens here)."""
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(
                    address,
                    port,
                    local_addr=(local_address, 0) if local_address else None,
                    # a literal address: getaddrinfo must not turn it into another one
                    flags=socket.AI_NUMERICHOST,
                )
        except TimeoutError as exc:
            raise httpcore.ConnectTimeout(str(exc)) from exc
        except OSError as exc:
            raise httpcore.ConnectError(str(exc)) from exc
        sock = writer.get_extra_info("socket")
        for option in socket_options or ():
            sock.setsockopt(*option)
        return cls(reader, writer)

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:  # noqa: ASYNC109
        try:
            async with asyncio.timeout(timeout):
                return await self._reader.read(max_bytes)
        except TimeoutError as exc:
            raise httpcore.ReadTimeout(str(exc)) from exc
        except OSError as exc:
            raise httpcore.ReadError(str(exc)) from exc

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:  # noqa: ASYNC109
        if not buffer:
            return
        try:
            self._writer.write(buffer)
            async with asyncio.timeout(timeout):
                await self._writer.drain()
        except TimeoutError as exc:
            raise httpcore.WriteTimeout(str(exc)) from exc
        except (OSError, RuntimeError) as exc:  # RuntimeError: write to a closed transport
            raise httpcore.WriteError(str(exc)) from exc

    async def aclose(self) -> None:
        self._writer.close()
        with contextlib.suppress(OSError, RuntimeError):  # already broken: closed is enough
            await self._writer.wait_closed()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> httpcore.AsyncNetworkStream:
        try:
            async with asyncio.timeout(timeout):
                await self._writer.start_tls(ssl_context, server_hostname=server_hostname)
        except TimeoutError as exc:
            await self.aclose()
            raise httpcore.ConnectTimeout(str(exc)) from exc
        except OSError as exc:  # ssl.SSLError included
            await self.aclose()
            raise httpcore.ConnectError(str(exc)) from exc
        return self

    def get_extra_info(self, info: str) -> Any:
        if info == "ssl_object":
            return self._writer.get_extra_info("ssl_object")
        if info == "client_addr":
            return self._writer.get_extra_info("sockname")
        if info == "server_addr":
            return self._writer.get_extra_info("peername")
        if info == "socket":
            return self._writer.get_extra_info("socket")
        if info == "is_readable":
            # An idle keep-alive connection is readable only when the server closed it.
            return (
                self._writer.is_closing()
                or self._reader.at_eof()
                or is_socket_readable(self._writer.get_extra_info("socket"))
            )
        return None
