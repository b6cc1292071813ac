"""A small HTTP/1.1 keep-alive load generator on raw asyncio streams (cheap enough not to be the bottleneck)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from collections import Counter
from collections.abc import Callable, Iterator
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
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    return status, (await reader.readexactly(length)) if length else b""


async def closed_loop(
    host: str, port: int, request: bytes, *, concurrency: int, seconds: float
) -> Result:
    """Each of ``concurrency`` connections sends the next request as soon as the last answered."""
    result = Result(seconds)

    async def worker() -> None:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while (start := time.perf_counter()) < deadline:
                try:
                    status, _ = await roundtrip(reader, writer, request)
                except (OSError, asyncio.IncompleteReadError):
                    result.errors += 1
                    writer.close()
                    reader, writer = await asyncio.open_connection(host, port)
                    continue
                result.latencies_ms.append((time.perf_counter() - start) * 1000)
                result.statuses[status] += 1
        finally:
            writer.close()

    with no_full_collections():
        deadline = time.perf_counter() + seconds
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return result


async def open_loop(
    host: str,
    port: int,
    request: bytes | Callable[[], bytes],
    *,
    rate: float,
    seconds: float,
    connections: int = 64,
) -> Result:
    """Send at a fixed arrival ``rate``; latency counts from the scheduled send time (no coordinated omission)."""
    result = Result(seconds)
    pool: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
    for _ in range(connections):
        pool.put_nowait(await asyncio.open_connection(host, port))
    interval = 1.0 / rate
    tasks = []

    async def one(scheduled: float) -> None:
        reader, writer = await pool.get()
        try:
            payload = request() if callable(request) else request
            status, _ = await roundtrip(reader, writer, payload)
            result.latencies_ms.append((time.perf_counter() - scheduled) * 1000)
            result.statuses[status] += 1
        except (OSError, asyncio.IncompleteReadError):
            result.errors += 1
            writer.close()
            reader, writer = await asyncio.open_connection(host, port)
        finally:
            pool.put_nowait((reader, writer))

    n = int(rate * seconds)
    with no_full_collections():
        start = time.perf_counter()
        for i in range(n):
            scheduled = start + i * interval
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(scheduled)))
        await asyncio.gather(*tasks)
    while not pool.empty():
        pool.get_nowait()[1].close()
    return result


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
) -> tuple[Result, Result]:
    """Warm both servers up, then measure the baseline's and the service's maximum rate back to back.

    Returns (service, baseline). Same client, same concurrency, same machine state: the ratio
    of the two rates is the figure to report. ``warm_up_s``: both are also loaded at full
    concurrency that long first. ``pids`` (service, baseline): each result's
    ``server_cpu_us`` is filled in from that process's CPU time.
    """
    targets = ((port, request), (base_port, base_request))
    for target_port, target_request in targets:
        await closed_loop("127.0.0.1", target_port, target_request, concurrency=8, seconds=1)
    if warm_up_s:
        for target_port, target_request in targets:
            await closed_loop(
                "127.0.0.1", target_port, target_request, concurrency=concurrency, seconds=warm_up_s
            )
    base = await _max_rate(base_port, base_request, pids[1], concurrency, seconds)
    service = await _max_rate(port, request, pids[0], concurrency, seconds)
    return service, base


async def _max_rate(
    port: int, request: bytes, pid: int | None, concurrency: int, seconds: float
) -> Result:
    before = cpu_s(pid)[0] if pid is not None else 0.0
    result = await closed_loop("127.0.0.1", port, request, concurrency=concurrency, seconds=seconds)
    if pid is not None:
        used = cpu_s(pid)[0] - before
        result.server_cpu_us = used * 1e6 / max(len(result.latencies_ms), 1)
    return result
