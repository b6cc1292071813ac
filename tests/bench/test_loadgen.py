"""The benchmark's load generator against a small local HTTP server: what it counts is what happened."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from bench.loadgen import build_request, closed_loop, open_loop, versus

ANSWER = b"HTTP/1.1 202 Accepted\r\ncontent-type: text/plain\r\ncontent-length: 5\r\n\r\nhello"


class Server:
    """Answers every request with ANSWER after ``delay_s``; closes instead on each ``close_every``-th."""

    def __init__(self, delay_s: float = 0.0, close_every: int = 0) -> None:
        self.delay_s = delay_s
        self.close_every = close_every
        self.requests = 0
        self.port = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line[15:])
                await reader.readexactly(length)
                self.requests += 1
                if self.close_every and self.requests % self.close_every == 0:
                    writer.close()
                    return
                if self.delay_s:
                    await asyncio.sleep(self.delay_s)
                writer.write(ANSWER)
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()


@pytest.fixture
async def serve() -> AsyncIterator[object]:
    servers: list[asyncio.Server] = []

    async def start(server: Server) -> Server:
        listening = await asyncio.start_server(server.handle, "127.0.0.1", 0)
        server.port = listening.sockets[0].getsockname()[1]
        servers.append(listening)
        return server

    yield start
    for listening in servers:
        listening.close()


def request_to(server: Server) -> bytes:
    return build_request("127.0.0.1", server.port, "/x", b'{"a": 1}', {"X-Test": "1"})


async def test_open_loop_sends_at_the_rate_and_counts_the_server_delay(serve):
    server = await serve(Server(delay_s=0.02))
    result = await open_loop("127.0.0.1", server.port, request_to(server), rate=100, seconds=0.5)
    assert dict(result.statuses) == {202: 50}
    assert server.requests == 50
    assert result.errors == 0
    assert result.pct(50) >= 20  # ms: the server's delay is in every latency


async def test_open_loop_counts_waiting_for_a_connection_as_latency(serve):
    # Two connections, 50 ms per answer, 100 requests/s: requests queue for a connection, and
    # that wait counts (no coordinated omission), so late ones take far longer than 50 ms.
    server = await serve(Server(delay_s=0.05))
    result = await open_loop(
        "127.0.0.1", server.port, request_to(server), rate=100, seconds=0.4, connections=2
    )
    assert sum(result.statuses.values()) == 40
    assert max(result.latencies_ms) > 500


async def test_a_connection_the_server_closes_is_an_error_and_the_run_still_ends(serve):
    server = await serve(Server(close_every=7))
    result = await asyncio.wait_for(
        open_loop("127.0.0.1", server.port, request_to(server), rate=200, seconds=0.5), 10
    )
    assert result.errors > 0
    assert result.errors + sum(result.statuses.values()) == 100
    closed = await asyncio.wait_for(
        closed_loop("127.0.0.1", server.port, request_to(server), concurrency=4, seconds=0.3), 10
    )
    assert closed.errors > 0
    assert closed.statuses[202] > closed.errors


async def test_open_loop_calls_a_callable_request_once_per_send(serve):
    server = await serve(Server())
    made = []

    def next_request() -> bytes:
        made.append(1)
        return request_to(server)

    result = await open_loop("127.0.0.1", server.port, next_request, rate=200, seconds=0.25)
    assert len(made) == 50 == sum(result.statuses.values())


async def test_versus_measures_both_servers_in_alternating_windows(serve):
    slow = await serve(Server(delay_s=0.005))
    fast = await serve(Server())
    service, base = await versus(
        slow.port, request_to(slow), fast.port, request_to(fast), concurrency=2, seconds=0.4
    )
    assert service.seconds == pytest.approx(0.4) and base.seconds == pytest.approx(0.4)
    assert 0 < service.rate < base.rate
    assert set(service.statuses) == {202} == set(base.statuses)
