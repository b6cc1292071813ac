"""The notifier's HTTP/1.1 client against raw asyncio servers: framing, keep-alive, failures."""

import asyncio
import time
from collections.abc import Awaitable, Callable

import pytest
from standardwebhooks import Webhook

from hookrun.config.model.base import signing_keys
from hookrun.notifier import pool
from hookrun.notifier.adapters import HttpSender
from hookrun.notifier.pool import ProtocolError, Target, request_bytes
from hookrun.notifier.signing import signed_headers
from tests.notifier.conftest import WHSEC_A

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
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/hook?x=1"

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


class TestRequests:
    def test_the_request_is_one_buffer_with_host_path_length_and_body(self):
        target = Target.parse("http://hooks.example.com:8080/a/b?c=d")
        data = request_bytes(target, {"content-type": "application/json"}, b'{"a":1}')
        assert data == (
            b"POST /a/b?c=d HTTP/1.1\r\nhost: hooks.example.com:8080\r\n"
            b"content-type: application/json\r\ncontent-length: 7\r\n\r\n"
            b'{"a":1}'
        )

    def test_the_default_port_is_left_out_of_the_host_header(self):
        assert b"host: hooks.example.com\r\n" in Target.parse("https://hooks.example.com/").head

    @pytest.mark.parametrize("value", ["a\r\nx-injected: 1", "a\nb", "a\0b", "caf\u00e9"])
    def test_a_header_that_could_split_the_request_is_refused(self, value):
        with pytest.raises(ProtocolError):
            request_bytes(Target.parse("http://h.example/"), {"x": value}, b"")

    async def test_the_signature_of_a_request_sent_verifies_with_the_official_library(self, sender):
        async with RawServer(ok()) as server:
            body = b'{"id":"run-1"}'
            headers = signed_headers("msg_1", int(time.time()), body, signing_keys([WHSEC_A]))
            result = await send(sender, server.url, body, headers)
        assert result.status_code == 200
        head, _, sent = server.requests[0].partition(b"\r\n\r\n")
        received = dict(
            (k.decode().lower(), v.decode().strip())
            for k, _, v in (line.partition(b":") for line in head.split(b"\r\n")[1:])
        )
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
            result = await send(sender, server.url)
        assert result.status_code is None and "ProtocolError" in result.error

    async def test_an_answer_cut_short_is_an_error(self, sender):
        async def short(request, reader, writer):
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc")
            return False

        async with RawServer(short) as server:
            result = await send(sender, server.url)
        assert result.status_code is None and result.error

    async def test_a_huge_body_is_cut_and_its_connection_closed(self, sender, monkeypatch):
        monkeypatch.setattr(pool, "MAX_BODY_BYTES", 10_000)
        body = b"x" * 50_000
        async with RawServer(ok(body=body)) as server:
            first = await send(sender, server.url)
            second = await send(sender, server.url)
        assert first.status_code == 200 and first.excerpt == "x" * 500
        assert second.status_code == 200 and server.connections == 2

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


def _prefixed(prefix: bytes, answer: Answer) -> Answer:
    async def wrapped(request, reader, writer):
        writer.write(prefix)
        return await answer(request, reader, writer)

    return wrapped
