"""A small HTTP/1.1 keep-alive load generator on raw asyncio streams (cheap enough not to be the bottleneck)."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import gc
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from bench.procstat import cpu_s


@dataclass
class Result:
    """What one load run measured."""

    seconds: float
    latencies_ms: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    errors: int = 0
    #: CPU microseconds the server process spent per answered request (``versus`` with pids).
    server_cpu_us: float | None = None

    @property
    def rate(self) -> float:
        return len(self.latencies_ms) / self.seconds if self.seconds else 0.0

    def pct(self, q: float) -> float:
        if not self.latencies_ms:
            return float("nan")
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


#: How many measurements are running (they may overlap); the heap is frozen while any is.
_measuring = 0


@contextlib.contextmanager
def no_full_collections() -> Iterator[None]:
    """Keep the garbage collector from walking the whole heap while latencies are measured.

    A full (generation 2) collection of the benchmark process's heap (everything bench/run.py
    imported) stalled the load generator for 50-90 ms, measured with ``gc.callbacks``: every
    request scheduled meanwhile counted the stall as latency, which set the p99 of whichever
    server was being measured at the time. ``gc.freeze`` moves what exists now out of the
    collector's reach (collected once first, before the clock starts); new objects are still
    collected. The same for every server measured.
    """
    global _measuring
    if _measuring == 0:
        gc.collect()
        gc.freeze()
    _measuring += 1
    try:
        yield
    finally:
        _measuring -= 1
        if _measuring == 0:  # the last of measurements that overlap
            gc.unfreeze()


def build_request(host: str, port: int, path: str, body: bytes, headers: dict[str, str]) -> bytes:
    """Return the bytes of one POST request (reused for every send)."""
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}:{port}", f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def roundtrip(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> tuple[int, bytes]:
    """Send one request on a keep-alive connection; return the answer's status and body."""
    writer.write(request)
    status, length = _status_and_length(await reader.readuntil(b"\r\n\r\n"))
    return status, (await reader.readexactly(length)) if length else b""


def _status_and_length(head: bytes) -> tuple[int, int]:
    """The status code and Content-Length (0 if there is none) of an answer's head."""
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    return int(head[9:12]), length


class _Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection with at most one request outstanding.

    A protocol rather than asyncio streams: the load generator shares the machine's two cores
    with the server and the broker it measures, and streams (a task, ``readuntil`` and
    ``readexactly`` per answer) cost it about 210 us of CPU per request at 1,250 requests/s.
    """

    def __init__(self, answered: Callable[[_Connection, int], None]) -> None:
        self.transport: asyncio.Transport | None = None
        #: When the outstanding request was due (open loop) or sent (closed loop); None if idle.
        self.since: float | None = None
        self._answered = answered
        self._buffer = bytearray()
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def send(self, request: bytes, since: float) -> None:
        self.since = since
        assert self.transport is not None
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        status, length = _status_and_length(bytes(buffer[:end]))
        if len(buffer) < end + 4 + length:
            return
        del buffer[: end + 4 + length]
        self._answered(self, status)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


async def _connect(
    host: str, port: int, answered: Callable[[_Connection, int], None]
) -> _Connection:
    loop = asyncio.get_running_loop()
    _, conn = await loop.create_connection(lambda: _Connection(answered), host, port)
    return conn


async def closed_loop(
    host: str, port: int, request: bytes, *, concurrency: int, seconds: float
) -> Result:
    """Each of ``concurrency`` connections sends the next request as soon as the last answered."""
    result = Result(seconds)
    loop = asyncio.get_running_loop()
    finished = loop.create_future()
    working = concurrency

    def answered(conn: _Connection, status: int) -> None:
        now = time.perf_counter()
        assert conn.since is not None
        result.latencies_ms.append((now - conn.since) * 1000)
        result.statuses[status] += 1
        if now < deadline:
            conn.send(request, now)
            return
        conn.since = None
        stop_one()

    def stop_one() -> None:
        nonlocal working
        working -= 1
        if working == 0 and not finished.done():
            finished.set_result(None)

    async def watch(conn: _Connection) -> None:
        """Replace a connection the server closed mid-request, counting an error."""
        while True:
            await conn.closed
            if conn.since is None:  # closed while idle: nothing was lost
                return
            result.errors += 1
            if time.perf_counter() >= deadline:
                stop_one()
                return
            conn = await _connect(host, port, answered)
            conns.append(conn)
            conn.send(request, time.perf_counter())

    conns = [await _connect(host, port, answered) for _ in range(concurrency)]
    with no_full_collections():
        deadline = time.perf_counter() + seconds
        watchers = [asyncio.create_task(watch(conn)) for conn in conns]
        now = time.perf_counter()
        for conn in conns:
            conn.send(request, now)
        await finished
    _shut(watchers, conns)
    return result


def _shut(watchers: list[asyncio.Task[None]], conns: Iterable[_Connection]) -> None:
    """Stop watching the connections and close them (the run is over)."""
    for task in watchers:
        task.cancel()
    for conn in conns:
        if conn.transport is not None:
            conn.transport.close()


async def open_loop(
    host: str,
    port: int,
    request: bytes | Callable[[], bytes],
    *,
    rate: float,
    seconds: float,
    connections: int = 64,
) -> Result:
    """Send at a fixed arrival ``rate``; latency counts from the scheduled send time (no coordinated omission).

    A request due while all ``connections`` are busy waits for the first one to free up, and
    that wait counts. ``request`` may be a callable, called at send time for each payload.
    """
    result = Result(seconds)
    loop = asyncio.get_running_loop()
    finished = loop.create_future()
    n = int(rate * seconds)
    outstanding = n
    # First in, first out: every connection stays in use, so none sits idle long enough for the
    # server's keep-alive timeout (uvicorn: 5 s) to close it just as a request goes out on it.
    idle: collections.deque[_Connection] = collections.deque()
    waiting: collections.deque[float] = collections.deque()  # due times without a connection

    def payload() -> bytes:
        return request() if callable(request) else request

    def done_one() -> None:
        nonlocal outstanding
        outstanding -= 1
        if outstanding == 0 and not finished.done():
            finished.set_result(None)

    def answered(conn: _Connection, status: int) -> None:
        assert conn.since is not None
        result.latencies_ms.append((time.perf_counter() - conn.since) * 1000)
        result.statuses[status] += 1
        conn.since = None
        if waiting:
            conn.send(payload(), waiting.popleft())
        else:
            idle.append(conn)
        done_one()

    async def watch(conn: _Connection) -> None:
        """Replace a connection the server closed, counting the request it carried as an error."""
        while True:
            await conn.closed
            if conn in idle:
                idle.remove(conn)
            if conn.since is not None:
                result.errors += 1
                done_one()
            if finished.done():
                return
            conn = await _connect(host, port, answered)
            if waiting:
                conn.send(payload(), waiting.popleft())
            else:
                idle.append(conn)

    for _ in range(connections):
        idle.append(await _connect(host, port, answered))
    watchers = [asyncio.create_task(watch(conn)) for conn in idle]
    interval = 1.0 / rate
    with no_full_collections():
        start = time.perf_counter()
        i = 0
        while i < n:
            delay = start + i * interval - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            # Everything due by now goes out, each counted from its own due time.
            now = time.perf_counter()
            while i < n and (due := start + i * interval) <= now:
                if idle:
                    idle.popleft().send(payload(), due)
                else:
                    waiting.append(due)
                i += 1
        if n:
            await finished
    _shut(watchers, idle)
    return result


#: How many alternating windows :func:`versus` splits each measurement into.
VERSUS_ROUNDS = 4


async def versus(
    port: int,
    request: bytes,
    base_port: int,
    base_request: bytes,
    *,
    concurrency: int,
    seconds: float,
    warm_up_s: float = 0.0,
    pids: tuple[int | None, int | None] = (None, None),
    rounds: int = VERSUS_ROUNDS,
) -> tuple[Result, Result]:
    """Warm both servers up, then measure the baseline's and the service's maximum rate, interleaved.

    Returns (service, baseline). Same client, same concurrency, same machine state: the ratio
    of the two rates is the figure to report. The ``seconds`` each gets are split into
    ``rounds`` windows taken in turn (baseline, service, service, baseline, ...), so a burst
    of load from elsewhere on a shared machine falls on both rather than on whichever was
    being measured at the time. ``warm_up_s``: both are also loaded at full concurrency that
    long first. ``pids`` (service, baseline): each result's ``server_cpu_us`` is filled in from
    that process's CPU time.
    """
    targets = ((port, request), (base_port, base_request))
    for target_port, target_request in targets:
        await closed_loop("127.0.0.1", target_port, target_request, concurrency=8, seconds=1)
    if warm_up_s:
        for target_port, target_request in targets:
            await closed_loop(
                "127.0.0.1", target_port, target_request, concurrency=concurrency, seconds=warm_up_s
            )
    window = seconds / rounds
    service_parts: list[Result] = []
    base_parts: list[Result] = []
    for i in range(rounds):
        order = ["base", "service"] if i % 2 == 0 else ["service", "base"]
        for which in order:
            if which == "base":
                base_parts.append(
                    await _max_rate(base_port, base_request, pids[1], concurrency, window)
                )
            else:
                service_parts.append(await _max_rate(port, request, pids[0], concurrency, window))
    return _joined(service_parts), _joined(base_parts)


def _joined(parts: list[Result]) -> Result:
    """One result out of measurement windows of the same server."""
    joined = Result(sum(p.seconds for p in parts))
    for part in parts:
        joined.latencies_ms += part.latencies_ms
        joined.statuses.update(part.statuses)
        joined.errors += part.errors
    cpu = [p.server_cpu_us * len(p.latencies_ms) for p in parts if p.server_cpu_us is not None]
    if cpu:
        joined.server_cpu_us = sum(cpu) / max(len(joined.latencies_ms), 1)
    return joined


async def _max_rate(
    port: int, request: bytes, pid: int | None, concurrency: int, seconds: float
) -> Result:
    before = cpu_s(pid)[0] if pid is not None else 0.0
    result = await closed_loop("127.0.0.1", port, request, concurrency=concurrency, seconds=seconds)
    if pid is not None:
        used = cpu_s(pid)[0] - before
        result.server_cpu_us = used * 1e6 / max(len(result.latencies_ms), 1)
    return result
