"""The notifier's HTTP sender against raw asyncio servers: framing, keep-alive, limits, TLS,
failures."""

import asyncio
import ssl
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from standardwebhooks import Webhook

from hookrun.config.model.base import signing_keys
from hookrun.dev.kafka_secure import make_ca, make_certificate
from hookrun.notifier import adapters
from hookrun.notifier.adapters import HttpSender, SendResult
from hookrun.notifier.signing import signed_headers
from tests.notifier.conftest import WHSEC_A
from tests.notifier.test_recorder import wait_until

Answer = Callable[[bytes, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[bool]]


class RawServer:
    """Reads each request (head + content-length body) and lets ``answer`` write raw bytes.

    ``answer`` returns False to close the connection after answering.
    """

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.connections = 0
        self.requests: list[bytes] = []
        self.closed = asyncio.Event()
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> "RawServer":
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.tls)
        return self

    tls: ssl.SSLContext | None = None

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()

    @property
    def port(self) -> int:
        assert self.server is not None
        return self.server.sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook?x=1"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    return
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                request = head + await reader.readexactly(length)
                self.requests.append(request)
                if not await self.answer(request, reader, writer):
                    return
        finally:
            writer.close()
            self.closed.set()


def ok(extra: bytes = b"", body: bytes = b"ok") -> Answer:
    async def answer(request, reader, writer):
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n%s\r\n%s" % (len(body), extra, body)
        )
        await writer.drain()
        return True

    return answer


@pytest.fixture
async def sender():
    sender = HttpSender(timeout_s=1.0, allow_private=True, concurrency=4)
    yield sender
    await sender.close()


async def send(sender: HttpSender, url: str, body: bytes = b"{}", headers=None):
    return await sender.send("sub", url, body, headers or {"content-type": "application/json"})


def _head(request: bytes) -> tuple[bytes, dict[str, str]]:
    """The request line and the headers (lower-case names) of a raw request."""
    head = request.partition(b"\r\n\r\n")[0].split(b"\r\n")
    return head[0], {
        k.decode().lower(): v.decode().strip()
        for k, _, v in (line.partition(b":") for line in head[1:])
    }


class TestRequests:
    async def test_the_request_carries_path_query_host_length_and_body(self, sender):
        async with RawServer(ok()) as server:
            result = await send(sender, server.url, b'{"a":1}')
            port = server.port
        assert result.status_code == 200
        line, headers = _head(server.requests[0])
        assert line == b"POST /hook?x=1 HTTP/1.1"
        assert headers["host"] == f"127.0.0.1:{port}"
        assert headers["content-length"] == "7" and server.requests[0].endswith(b'{"a":1}')
        assert headers["content-type"] == "application/json"
        assert headers["user-agent"] == "hookrun-notifier" and "accept-encoding" not in headers

    @pytest.mark.parametrize("value", ["a\r\nx-injected: 1", "a\nb", "a\0b", "caf\u00e9"])
    async def test_a_header_that_could_split_the_request_is_not_sent(self, sender, value):
        async with RawServer(ok()) as server:
            result = await send(sender, server.url, headers={"x": value})
        assert result.status_code is None and "invalid header 'x'" in (result.error or "")
        assert server.requests == []

    async def test_the_signature_of_a_request_sent_verifies_with_the_official_library(self, sender):
        async with RawServer(ok()) as server:
            body = b'{"id":"run-1"}'
            headers = signed_headers("msg_1", int(time.time()), body, signing_keys([WHSEC_A]))
            result = await send(sender, server.url, body, headers)
        assert result.status_code == 200
        _, received = _head(server.requests[0])
        sent = server.requests[0].partition(b"\r\n\r\n")[2]
        assert sent == body
        assert Webhook(WHSEC_A).verify(sent, received) == {"id": "run-1"}


class TestAnswers:
    async def test_keep_alive_connections_are_reused(self, sender):
        async with RawServer(ok()) as server:
            for _ in range(5):
                result = await send(sender, server.url)
                assert (result.status_code, result.excerpt) == (200, "ok")
        assert server.connections == 1 and len(server.requests) == 5

    async def test_a_chunked_answer_is_read_whole_and_the_connection_reused(self, sender):
        async def chunked(request, reader, writer):
            writer.write(b"HTTP/1.1 500 Oops\r\ntransfer-encoding: chunked\r\n\r\n")
            writer.write(b"4;ext=1\r\ntry \r\n")
            await writer.drain()
            writer.write(b"5\r\nlater\r\n0\r\nx-trailer: 1\r\n\r\n")
            await writer.drain()
            return True

        async with RawServer(chunked) as server:
            first = await send(sender, server.url)
            second = await send(sender, server.url)
        assert (first.status_code, first.excerpt) == (500, "try later")
        assert second.excerpt == "try later" and server.connections == 1

    async def test_an_answer_framed_by_the_end_of_the_connection_is_read_to_the_end(self, sender):
        async def until_close(request, reader, writer):
            writer.write(b"HTTP/1.1 503 Busy\r\nretry-after: 7\r\n\r\npart one, ")
            await writer.drain()
            writer.write(b"part two")
            return False

        async with RawServer(until_close) as server:
            first = await send(sender, server.url)
            second = await send(sender, server.url)
        assert (first.status_code, first.excerpt, first.retry_after_s) == (
            503,
            "part one, part two",
            7.0,
        )
        assert second.status_code == 503 and server.connections == 2

    async def test_interim_answers_are_skipped(self, sender):
        async with RawServer(ok()) as server:
            server.answer = _prefixed(b"HTTP/1.1 100 Continue\r\n\r\n", server.answer)
            result = await send(sender, server.url)
        assert result.status_code == 200

    async def test_a_connection_closed_by_the_server_while_idle_is_not_written_to(self, sender):
        async def once(request, reader, writer):
            writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
            await writer.drain()
            return False  # closes the keep-alive connection after answering

        async with RawServer(once) as server:
            assert (await send(sender, server.url)).status_code == 204
            await server.closed.wait()
            await asyncio.sleep(0.05)  # the client sees the EOF
            assert (await send(sender, server.url)).status_code == 204
        assert server.connections == 2

    async def test_connection_close_is_honoured(self, sender):
        async with RawServer(ok(b"connection: close\r\n")) as server:
            await send(sender, server.url)
            await send(sender, server.url)
        assert server.connections == 2

    async def test_garbage_is_an_error_not_a_status(self, sender):
        async def garbage(request, reader, writer):
            writer.write(b"SMTP ready\r\n\r\n")
            return True

        async with RawServer(garbage) as server:
            result = await send(sender, server.url.replace("x=1", "token=s3cret"))
        assert result.status_code is None and "ProtocolError" in result.error
        assert "s3cret" not in result.error  # a URL can hold the subscriber's secret

    async def test_an_answer_cut_short_is_an_error(self, sender):
        async def short(request, reader, writer):
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc")
            return False

        async with RawServer(short) as server:
            result = await send(sender, server.url)
        assert result.status_code is None and result.error

    async def test_a_huge_body_is_cut_and_its_connection_closed(self, sender, monkeypatch):
        monkeypatch.setattr(adapters, "MAX_BODY_BYTES", 100_000)
        written = 0

        async def huge(request, reader, writer):
            nonlocal written
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % (64 << 20))
            try:
                for _ in range(1024):  # 64 MiB, unless the client stops reading first
                    writer.write(b"x" * 65536)
                    await writer.drain()
                    written += 65536
            except ConnectionError:
                pass
            return False

        async with RawServer(huge) as server:
            first = await send(sender, server.url)
            await asyncio.wait_for(server.closed.wait(), 5)
        assert first.status_code == 200 and first.excerpt == "x" * 500
        assert written < 16 << 20  # cut, not drained to its end

    async def test_a_subscriber_that_never_answers_times_out_and_loses_the_connection(self):
        async def hang(request, reader, writer):
            await reader.read()  # until the client gives up
            return False

        sender = HttpSender(timeout_s=0.3, allow_private=True, concurrency=1)
        try:
            async with RawServer(hang) as server:
                result = await send(sender, server.url)
                await asyncio.wait_for(server.closed.wait(), 2)
        finally:
            await sender.close()
        assert result.status_code is None and "timed out" in result.error

    async def test_nothing_listening_is_an_error_result(self, sender):
        async with RawServer(ok()) as server:
            url = server.url
        result = await send(sender, url)
        assert result.status_code is None and "ConnectError" in result.error

    async def test_a_redirect_is_answered_not_followed(self, sender):
        async def redirect(request, reader, writer):
            writer.write(b"HTTP/1.1 307 Moved\r\nlocation: /elsewhere\r\ncontent-length: 0\r\n\r\n")
            await writer.drain()
            return True

        async with RawServer(redirect) as server:
            result = await send(sender, server.url)
        assert result.status_code == 307 and len(server.requests) == 1

    async def test_cookies_a_subscriber_sets_are_not_sent_back(self, sender):
        async with RawServer(ok(b"set-cookie: session=abc; Path=/\r\n")) as server:
            await send(sender, server.url)
            await send(sender, server.url)
        assert all("cookie" not in _head(r)[1] for r in server.requests)


class TestLimits:
    async def test_each_subscription_has_at_most_concurrency_connections_of_its_own(self):
        release = asyncio.Event()

        async def held(request, reader, writer):
            if b"/held" in request.split(b"\r\n", 1)[0]:
                await release.wait()
            return await ok()(request, reader, writer)

        sender = HttpSender(timeout_s=5, allow_private=True, concurrency=2)
        try:
            async with RawServer(held) as server:
                base = f"http://127.0.0.1:{server.port}"
                busy = [
                    asyncio.create_task(sender.send("busy", f"{base}/held", b"{}", {}))
                    for _ in range(5)
                ]
                await wait_until(lambda: len(server.requests) == 2, 5)
                await asyncio.sleep(0.2)
                assert server.connections == 2  # the other three wait for a slot
                # another subscription is not held back by the busy one's full pool
                other = await sender.send("other", f"{base}/free", b"{}", {})
                assert other.status_code == 200
                release.set()
                results = await asyncio.gather(*busy)
        finally:
            await sender.close()
        assert [r.status_code for r in results] == [200] * 5
        assert server.connections == 3  # two for the busy subscription, one for the other


def _tls(directory: Path, host: str) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A server context with a certificate for ``host`` from a new CA, and a client context
    that trusts that CA (and verifies as the notifier does)."""
    ca = make_ca(directory)
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(make_certificate(ca, "server", hosts=(host,)))
    return server, ssl.create_default_context(cafile=ca)


async def _over_tls(
    server_tls: ssl.SSLContext, name: str, client_tls: ssl.SSLContext | None, times: int = 1
) -> tuple[list[SendResult], RawServer, list[str]]:
    """POST ``times`` to https://<name>:<port>/hook, ``name`` resolving to 127.0.0.1 through
    the guard, to a TLS server; the results, the server and the names looked up."""
    lookups: list[str] = []

    async def resolve(host: str, port: int) -> list[str]:
        lookups.append(host)
        return ["127.0.0.1"]

    sender = HttpSender(
        timeout_s=5, allow_private=True, concurrency=2, resolver=resolve, ssl_context=client_tls
    )
    server = RawServer(ok())
    server.tls = server_tls
    try:
        async with server:
            url = f"https://{name}:{server.port}/hook"
            results = [await send(sender, url) for _ in range(times)]
    finally:
        await sender.close()
    return results, server, lookups


class TestTls:
    async def test_a_name_is_connected_on_its_vetted_address_with_sni_and_host_of_the_name(
        self, tmp_path
    ):
        server_tls, client_tls = _tls(tmp_path, "hooks.example")
        sni: list[str | None] = []
        server_tls.sni_callback = lambda sock, name, ctx: sni.append(name)
        results, server, lookups = await _over_tls(server_tls, "hooks.example", client_tls, 3)
        assert [r.status_code for r in results] == [200] * 3, results
        assert sni == ["hooks.example"] and server.connections == 1
        assert _head(server.requests[0])[1]["host"].startswith("hooks.example:")
        assert lookups == ["hooks.example"]

    async def test_a_certificate_for_another_name_fails_the_attempt(self, tmp_path):
        server_tls, client_tls = _tls(tmp_path, "hooks.example")
        [result], server, _ = await _over_tls(server_tls, "other.example", client_tls)
        assert result.status_code is None and not result.refused
        assert "certificate" in (result.error or "").lower() and server.requests == []

    async def test_by_default_a_certificate_from_an_unknown_ca_fails_the_attempt(self, tmp_path):
        server_tls, _ = _tls(tmp_path, "hooks.example")
        [result], server, _ = await _over_tls(server_tls, "hooks.example", None)
        assert result.status_code is None and "certificate" in (result.error or "").lower()
        assert server.requests == []


def _prefixed(prefix: bytes, answer: Answer) -> Answer:
    async def wrapped(request, reader, writer):
        writer.write(prefix)
        return await answer(request, reader, writer)

    return wrapped
