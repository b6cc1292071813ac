"""The notifier's HTTP/1.1 client: a keep-alive connection pool per subscription on asyncio protocols.

httpx, httpcore and h11 cost the notifier several times the CPU of the rest of an attempt, even
with a lean pool (docs/notifier.md, Performance): an ``httpx.Request`` and URL per attempt, a lock per
connection whose setup tries ``import sniffio`` every time, separate socket writes for the head
and the body, and h11's per-event validation. A webhook POST needs little of that: the request
is one buffer written at once (one system call), and the answer is parsed from the bytes the
protocol receives: the status line, a handful of headers, and the body framed by
``content-length`` or chunked encoding (or the end of the connection), of which only an excerpt
is kept.

Connections are made only to addresses :func:`hookrun.notifier.ssrf.vet` allowed (numeric,
``AI_NUMERICHOST``: nothing is resolved a second time); TLS takes SNI and the certificate check
from the URL's host. A connection the server closed is noticed by its protocol (EOF) and never
reused; idle ones expire after ``keepalive_expiry``.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import httpx

from hookrun.notifier.ssrf import Resolver, vet

#: Longest status line plus headers accepted in an answer.
MAX_HEAD_BYTES = 64 * 1024
#: Longest body read; a longer one is cut there and its connection closed, not drained.
MAX_BODY_BYTES = 1024 * 1024
#: Body bytes kept for the response excerpt (500 characters of UTF-8 fit in 2,000 bytes).
KEPT_BODY_BYTES = 2048

_NO_BODY_STATUS = frozenset({204, 304})


class HttpError(Exception):
    """The exchange failed: the connection broke, or the answer is not valid HTTP/1.1."""


class ConnectError(HttpError):
    """No connection could be made to any vetted address of the target."""


class ProtocolError(HttpError):
    """The answer (or the request to write) breaks HTTP/1.1 framing."""


@dataclass(frozen=True, slots=True)
class Target:
    """A parsed webhook URL: where to connect and the first lines of every request to it."""

    scheme: str
    host: str
    port: int
    #: ``POST <path> HTTP/1.1`` and the ``host`` header, ready to be written.
    head: bytes

    @property
    def tls(self) -> bool:
        return self.scheme == "https"

    @classmethod
    def parse(cls, url: str, method: str = "POST") -> Target:
        """Parse and validate ``url`` (httpx's parser); raise ``httpx.InvalidURL`` if unusable."""
        parsed = httpx.URL(url)
        if parsed.scheme not in ("http", "https"):
            raise httpx.InvalidURL(f"unsupported scheme {parsed.scheme!r}")
        if not parsed.host:
            raise httpx.InvalidURL("no host")
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        # netloc is the IDNA-encoded host (bracketed for IPv6) with a non-default port.
        netloc = parsed.netloc.rsplit(b"@", 1)[-1]
        head = b"%s %s HTTP/1.1\r\nhost: %s\r\n" % (method.encode(), parsed.raw_path, netloc)
        return cls(parsed.scheme, parsed.host, port, head)


def request_bytes(target: Target, headers: dict[str, str], body: bytes) -> bytes:
    """The whole request: head, headers, ``content-length`` and body, for one write.

    Raises :class:`ProtocolError` for a header that could split the request (CR, LF, NUL) or
    is not ASCII.
    """
    lines = [target.head]
    for name, value in headers.items():
        line = f"{name}: {value}\r\n"
        if "\r" in value or "\n" in value or "\0" in value or line.count("\r") != 1:
            raise ProtocolError(f"invalid header {name!r}")
        try:
            lines.append(line.encode("ascii"))
        except UnicodeEncodeError as exc:
            raise ProtocolError(f"header {name!r} is not ASCII") from exc
    lines.append(b"content-length: %d\r\n\r\n" % len(body))
    lines.append(body)
    return b"".join(lines)


@dataclass(slots=True)
class Response:
    """An answer: status, headers (lower-case names), the first body bytes."""

    status: int
    headers: dict[str, str]
    #: At most :data:`KEPT_BODY_BYTES` of the body.
    body: bytes
    #: True when the connection may carry another request.
    keep_alive: bool

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection: writes a request, parses the answer as its bytes arrive."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._buffer = bytearray()
        self._eof = False
        self._waiter: asyncio.Future[Response] | None = None
        self._response: Response | None = None
        # body framing of the answer being read: "length", "chunked" or "close"
        self._framing = ""
        self._remaining = 0
        self._read = 0
        self._kept = bytearray()
        self._trailers = False

    # -- asyncio callbacks --------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        if self._waiter is None:
            # Bytes nobody asked for: the connection's state is unknown, so it is not reused.
            self.close()
            return
        self._buffer += data
        self._advance()

    def eof_received(self) -> bool:
        self._eof = True
        if self._waiter is not None:
            self._advance()
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._eof = True
        if self._waiter is not None:
            self._advance()
        if self._waiter is not None and not self._waiter.done():
            detail = f": {exc}" if exc else ""
            self._waiter.set_exception(
                HttpError(f"connection closed before a complete answer{detail}")
            )
        self._waiter = None

    # -- use ----------------------------------------------------------------------------

    def usable(self) -> bool:
        return not self.closed and self.transport is not None and not self.transport.is_closing()

    def exchange(self, request: bytes) -> asyncio.Future[Response]:
        """Write ``request``; the future resolves to the answer (or fails with HttpError)."""
        assert self._waiter is None
        if not self.usable():
            raise HttpError("connection closed before the request was sent")
        assert self.transport is not None
        self._waiter = asyncio.get_running_loop().create_future()
        self._response = None
        self.transport.write(request)
        return self._waiter

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        self.closed = True
        self._waiter = None
        if self.transport is not None:
            self.transport.abort()

    # -- parsing ------------------------------------------------------------------------

    def _advance(self) -> None:
        try:
            done = self._parse()
        except ProtocolError as exc:
            self._fail(exc)
            return
        if done:
            waiter, response = self._waiter, self._response
            assert waiter is not None and response is not None
            self._waiter = None
            if self._buffer:
                response.keep_alive = False  # more bytes than the answer: not to be trusted
            if not response.keep_alive:
                self.close()
            if not waiter.done():
                waiter.set_result(response)
        elif self._eof:
            self._fail(HttpError("connection closed before a complete answer"))

    def _fail(self, exc: Exception) -> None:
        waiter, self._waiter = self._waiter, None
        self.close()
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    def _parse(self) -> bool:
        """Consume what the buffer holds; True once the whole answer has been read."""
        if self._response is None and not self._parse_head():
            return False
        if self._framing == "length":
            return self._parse_length()
        if self._framing == "chunked":
            return self._parse_chunked()
        self._keep(self._buffer, len(self._buffer))
        self._buffer.clear()
        return self._finish() if self._eof or self._too_long() else False

    def _parse_head(self) -> bool:
        while True:
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buffer) > MAX_HEAD_BYTES:
                    raise ProtocolError("answer head too long")
                return False
            head = bytes(self._buffer[:end])
            del self._buffer[: end + 4]
            status_line, *lines = head.split(b"\r\n")
            version, _, rest = status_line.partition(b" ")
            code = rest[:3]
            if version not in (b"HTTP/1.1", b"HTTP/1.0") or not code.isdigit():
                raise ProtocolError(f"not an HTTP/1.1 status line: {status_line[:80]!r}")
            status = int(code)
            if status == 101 or status < 100:
                raise ProtocolError(f"unexpected status {status}")
            if status < 200:
                continue  # an interim answer (100 Continue, 103 Early Hints): the real one follows
            break
        headers: dict[str, str] = {}
        for line in lines:
            name, sep, value = line.partition(b":")
            if not sep or not name or name != name.strip():
                raise ProtocolError(f"malformed header line {line[:80]!r}")
            key = name.decode("latin-1").lower()
            text = value.strip().decode("latin-1")
            if key in headers:
                if key == "content-length" and headers[key] != text:
                    raise ProtocolError("conflicting content-length headers")
                text = f"{headers[key]}, {text}"
            headers[key] = text
        tokens = {t.strip().lower() for t in headers.get("connection", "").split(",")}
        keep_alive = version == b"HTTP/1.1" and "close" not in tokens
        self._kept.clear()
        self._read = 0
        self._trailers = False
        coding = headers.get("transfer-encoding", "")
        if status in _NO_BODY_STATUS:
            self._framing, self._remaining = "length", 0
        elif coding:
            if coding.lower().rsplit(",", 1)[-1].strip() == "chunked":
                self._framing, self._remaining = "chunked", -1
            else:
                self._framing, keep_alive = "close", False
            if "content-length" in headers:
                keep_alive = False  # both framings: the request smuggling shape, never reused
        elif "content-length" in headers:
            length = headers["content-length"].split(",")[0].strip()
            if not length.isdigit():
                raise ProtocolError(f"bad content-length {length[:20]!r}")
            self._framing, self._remaining = "length", int(length)
        else:
            self._framing, keep_alive = "close", False
        self._response = Response(status, headers, b"", keep_alive)
        return True

    def _keep(self, data: bytes | bytearray | memoryview, n: int) -> None:
        room = KEPT_BODY_BYTES - len(self._kept)
        if room > 0:
            self._kept += data[: min(room, n)]
        self._read += n

    def _finish(self) -> bool:
        assert self._response is not None
        self._response.body = bytes(self._kept)
        return True

    def _too_long(self) -> bool:
        assert self._response is not None
        if self._read <= MAX_BODY_BYTES:
            return False
        self._response.keep_alive = False
        self._buffer.clear()
        return True

    def _parse_length(self) -> bool:
        n = min(self._remaining, len(self._buffer))
        if n:
            self._keep(self._buffer, n)
            del self._buffer[:n]
            self._remaining -= n
        if self._too_long() or self._remaining == 0:
            return self._finish()
        if self._eof:
            raise ProtocolError("connection closed inside the body")
        return False

    def _parse_chunked(self) -> bool:
        buffer = self._buffer
        while True:
            if self._trailers:
                end = buffer.find(b"\r\n")
                if end < 0:
                    return False
                del buffer[: end + 2]
                if end == 0:
                    return self._finish()
                continue
            if self._remaining < 0:  # at a chunk-size line
                end = buffer.find(b"\r\n")
                if end < 0:
                    if len(buffer) > 1024:
                        raise ProtocolError("chunk size line too long")
                    return False
                size = bytes(buffer[:end]).split(b";", 1)[0].strip()
                try:
                    self._remaining = int(size, 16)
                except ValueError:
                    raise ProtocolError(f"bad chunk size {size[:20]!r}") from None
                if self._remaining < 0:
                    raise ProtocolError("negative chunk size")
                del buffer[: end + 2]
                if self._remaining == 0:
                    self._trailers = True
                    continue
            # chunk data, then its CRLF
            n = min(self._remaining, len(buffer))
            if n:
                self._keep(buffer, n)
                del buffer[:n]
                self._remaining -= n
            if self._too_long():
                return self._finish()
            if self._remaining > 0 or len(buffer) < 2:
                return False  # more data, or the CRLF after it, still to come
            if buffer[:2] != b"\r\n":
                raise ProtocolError("chunk not followed by CRLF")
            del buffer[:2]
            self._remaining = -1


Connector = Callable[[Target], Awaitable[_Connection]]


class Pool:
    """The connections of one subscription: at most ``max_connections`` requests at a time.

    Idle connections sit on a LIFO stack (the most recently used is the most likely alive);
    one past ``keepalive_expiry`` is closed when it is reached, or from the bottom of the stack
    as requests come back, so an idle pool does not hold sockets for ever.
    """

    def __init__(
        self,
        *,
        max_connections: int,
        keepalive_expiry: float,
        resolver: Resolver,
        allow_private: bool,
        ssl_context: Callable[[], ssl.SSLContext],
    ) -> None:
        self._slots = asyncio.Semaphore(max_connections)
        self._expiry = keepalive_expiry
        self._resolver = resolver
        self._allow_private = allow_private
        self._ssl_context = ssl_context
        self._idle: list[tuple[Target, _Connection]] = []
        self._closed = False

    async def request(self, target: Target, request: bytes) -> Response:
        """Send one request (from :func:`request_bytes`) and return the answer.

        Raises TargetRefused (from the SSRF guard), :class:`HttpError` and its subclasses; a
        cancellation (the caller's timeout) aborts the connection in use.
        """
        async with self._slots:
            connection = self._reuse(target) or await self._connect(target)
            try:
                response = await connection.exchange(request)
            except BaseException:
                connection.abort()
                raise
            if response.keep_alive and connection.usable() and not self._closed:
                connection.idle_since = asyncio.get_running_loop().time()
                self._idle.append((target, connection))
                self._expire_oldest()
            else:
                connection.close()
            return response

    def _reuse(self, target: Target) -> _Connection | None:
        now = asyncio.get_running_loop().time()
        while self._idle:
            origin, connection = self._idle.pop()
            if (
                origin == target
                and connection.usable()
                and now - connection.idle_since < self._expiry
            ):
                return connection
            connection.close()
        return None

    def _expire_oldest(self) -> None:
        if len(self._idle) > 1:
            _, oldest = self._idle[0]
            if asyncio.get_running_loop().time() - oldest.idle_since >= self._expiry:
                del self._idle[0]
                oldest.close()

    async def _connect(self, target: Target) -> _Connection:
        addresses = await vet(
            target.host, target.port, self._resolver, allow_private=self._allow_private
        )
        loop = asyncio.get_running_loop()
        last: Exception | None = None
        for address in addresses:
            try:
                _, connection = await loop.create_connection(
                    _Connection,
                    address,
                    target.port,
                    # a literal address: getaddrinfo must not turn it into another one
                    flags=socket.AI_NUMERICHOST,
                    ssl=self._ssl_context() if target.tls else None,
                    server_hostname=target.host if target.tls else None,
                )
                return connection
            except OSError as exc:  # ssl.SSLError included
                last = exc
        raise ConnectError(f"could not connect to {target.host}:{target.port}: {last}")

    async def aclose(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        for _, connection in idle:
            connection.close()
