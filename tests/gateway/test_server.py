"""How the gateway is served: uvicorn's options, and the read deadlines over real sockets.

The same server as ``main()`` runs in a thread with the Fake adapters, so these run without a
broker; tests/integration/test_gateway_slow_clients.py drives the real process.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import uvicorn
from pydantic import ValidationError

from hookrun.config import parse_config
from hookrun.dev.kafka_net import free_port
from hookrun.gateway.adapters import FakeDeliveryIndex, FakeEventLog
from hookrun.gateway.app import build
from hookrun.gateway.config import Settings
from hookrun.gateway.server import ReadDeadlineProtocol, uvicorn_options

CONFIG = """
project: {id: p-1, slug: demo, name: Demo}
organization: {id: o-1, slug: acme, title: Acme}
environment: {id: e-1, slug: dev, type: DEVELOPMENT}
steps:
  - {name: noop, command: ["true"]}
triggers:
  - {id: open, title: Open, conditions: [], actions: [{action: run_execution, step: noop}]}
"""

DEADLINE_S = 1.0
MAX_CONNECTIONS = 3


class TestOptions:
    def test_defaults(self) -> None:
        options = uvicorn_options(Settings())
        protocol = options["http"]
        assert issubclass(protocol, ReadDeadlineProtocol)
        assert (protocol.header_timeout_s, protocol.body_timeout_s) == (10.0, 30.0)
        assert options["limit_concurrency"] == 1025
        assert options["timeout_keep_alive"] == 5
        assert options["ws"] == "none"

    def test_uvicorn_counts_the_asking_connection_so_the_cap_gets_one_more(self) -> None:
        options = uvicorn_options(Settings(hookrun_max_connections=7))
        assert options["limit_concurrency"] == 8

    def test_each_settings_object_gets_its_own_deadlines(self) -> None:
        a = uvicorn_options(Settings(hookrun_header_timeout_s=1.5))["http"]
        b = uvicorn_options(Settings(hookrun_body_timeout_s=2.5))["http"]
        assert (a.header_timeout_s, a.body_timeout_s) == (1.5, 30.0)
        assert (b.header_timeout_s, b.body_timeout_s) == (10.0, 2.5)

    @pytest.mark.parametrize(
        "field",
        [
            "hookrun_header_timeout_s",
            "hookrun_body_timeout_s",
            "hookrun_max_connections",
            "hookrun_keep_alive_s",
        ],
    )
    def test_zero_is_refused(self, field: str) -> None:
        with pytest.raises(ValidationError, match=field):
            Settings(**{field: 0})


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[int, FakeEventLog]]:
    log = FakeEventLog()
    settings = Settings(
        hookrun_port=free_port(),
        hookrun_header_timeout_s=DEADLINE_S,
        hookrun_body_timeout_s=DEADLINE_S,
        hookrun_max_connections=MAX_CONNECTIONS,
        log_level="warning",
    )
    app = build(
        settings,
        parse_config(CONFIG, "hookrun.yaml"),
        event_log=log,
        deliveries=FakeDeliveryIndex(),
    )
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, **uvicorn_options(settings)))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    try:
        yield settings.hookrun_port, log
    finally:
        server.should_exit = True
        thread.join(15)


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=DEADLINE_S + 5)


def read_until_closed(sock: socket.socket) -> tuple[float, bytes]:
    started, answer = time.monotonic(), b""
    try:
        while chunk := sock.recv(4096):
            answer += chunk
    except ConnectionResetError:
        pass
    return time.monotonic() - started, answer


def test_unfinished_headers_get_408_and_the_connection_is_closed(served) -> None:
    port, _ = served
    with connect(port) as sock:
        sock.sendall(b"POST /api/v0/launch/open/ HTTP/1.1\r\nHost: x\r\n")
        took, answer = read_until_closed(sock)
    assert took <= DEADLINE_S + 1
    assert answer.startswith(b"HTTP/1.1 408 Request Timeout\r\n")
    assert answer.endswith(b"\r\nconnection: close\r\n\r\nRequest Timeout")


def test_an_unfinished_body_gets_408_and_nothing_is_appended(served) -> None:
    port, log = served
    log.events.clear()
    with connect(port) as sock:
        sock.sendall(
            b"POST /api/v0/launch/open/ HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n{"
        )
        took, answer = read_until_closed(sock)
    assert took <= DEADLINE_S + 1
    assert answer.startswith(b"HTTP/1.1 408 ")
    time.sleep(0.2)
    assert log.events == []
    # the same launch sent whole is accepted
    r = httpx.post(f"http://127.0.0.1:{port}/api/v0/launch/open/", content=b"{}")
    assert r.status_code == 202
    assert len(log.events) == 1


def test_a_kept_alive_connection_gets_a_fresh_header_deadline_per_request(served) -> None:
    port, _ = served
    with connect(port) as sock:
        for _ in range(3):
            time.sleep(DEADLINE_S * 0.6)  # together past one deadline, each within it
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            assert sock.recv(4096).startswith(b"HTTP/1.1 200 ")


def test_past_the_cap_503_at_once_then_served_when_the_deadline_frees_the_slots(served) -> None:
    port, _ = served
    slow = [connect(port) for _ in range(MAX_CONNECTIONS)]
    try:
        for sock in slow:
            sock.sendall(b"GET /healthz HTTP/1.1\r\n")
        time.sleep(0.1)
        started = time.monotonic()
        r = httpx.get(f"http://127.0.0.1:{port}/healthz")
        assert (r.status_code, r.headers["connection"]) == (503, "close")
        assert time.monotonic() - started < DEADLINE_S
        for sock in slow:
            read_until_closed(sock)
        # the server may still be tidying the closed connections up
        for _ in range(20):
            r = httpx.get(f"http://127.0.0.1:{port}/healthz")
            if r.status_code == 200:
                break
            time.sleep(0.05)
        assert r.status_code == 200
    finally:
        for sock in slow:
            sock.close()
