"""Slow clients against the gateway as a real process: read deadlines and the connection cap."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import select
import socket
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest

from hookrun.dev.events import read_events
from hookrun.dev.kafka_net import free_port
from hookrun.dev.procs import ServiceProcess
from hookrun.dev.pytest_kafka import new_namespace
from hookrun.events import TriggerLaunched, decode, topics

pytestmark = pytest.mark.kafka

HEADER_TIMEOUT_S = 2.0
BODY_TIMEOUT_S = 3.0
MAX_CONNECTIONS = 4
#: How late a cut may come: the gateway shares two cores with the test and the broker.
SLACK_S = 1.5

CONFIG = """
project: {id: p-1, slug: demo, name: Demo}
organization: {id: o-1, slug: acme, title: Acme}
environment: {id: e-1, slug: dev, type: DEVELOPMENT}
steps:
  - {name: noop, command: ["true"]}
triggers:
  - id: gh
    title: GitHub
    conditions: [{preset: github, secret: gh-secret}]
    actions: [{action: run_execution, step: noop}]
    response: {text: "Created run {run_id}"}
"""


class Gateway:
    def __init__(self, port: int, namespace: str) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.namespace = namespace

    def connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=5)


@pytest.fixture(scope="module")
def gateway(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    tmp = tmp_path_factory.mktemp("slow-clients")
    (tmp / "hookrun.yaml").write_text(CONFIG)
    port, namespace = free_port(), new_namespace()
    proc = ServiceProcess(
        f"gateway-{port}",
        "hookrun.gateway",
        {
            "HOOKRUN_CONFIG": str(tmp / "hookrun.yaml"),
            "HOOKRUN_PORT": str(port),
            "HOOKRUN_NAMESPACE": namespace,
            "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
            "HOOKRUN_HEADER_TIMEOUT_S": str(HEADER_TIMEOUT_S),
            "HOOKRUN_BODY_TIMEOUT_S": str(BODY_TIMEOUT_S),
            "HOOKRUN_MAX_CONNECTIONS": str(MAX_CONNECTIONS),
        },
        tmp,
        health_url=f"http://127.0.0.1:{port}/healthz",
    )
    proc.start(wait_s=60)
    try:
        yield Gateway(port, namespace)
    finally:
        proc.stop()


def signed_launch(body: bytes) -> bytes:
    """The head of a launch of trigger gh, signed for ``body``."""
    signature = hmac.new(b"gh-secret", body, hashlib.sha256).hexdigest()
    return (
        b"POST /api/v0/launch/gh/ HTTP/1.1\r\nHost: gateway\r\n"
        b"Content-Type: application/json\r\n"
        b"X-Hub-Signature-256: sha256=" + signature.encode() + b"\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n"
    )


def trickle(
    sock: socket.socket, data: bytes, every_s: float, give_up_s: float
) -> tuple[float, bytes]:
    """Send ``data`` one byte every ``every_s``, until the gateway closes the connection.

    Returns the seconds until it did and what it answered; fails if it is still open after
    ``give_up_s``.
    """
    started = time.monotonic()
    answer = b""
    for byte in data:
        try:
            sock.sendall(bytes([byte]))
        except OSError:
            return time.monotonic() - started, answer
        ready, _, _ = select.select([sock], [], [], every_s)
        if ready:
            try:
                chunk = sock.recv(4096)
            except ConnectionResetError:
                return time.monotonic() - started, answer
            answer += chunk
            if not chunk:
                return time.monotonic() - started, answer
        if time.monotonic() - started > give_up_s:
            break
    pytest.fail(f"still connected after {time.monotonic() - started:.1f} s: {answer!r}")


def assert_timed_out(answer: bytes) -> None:
    # A close that races the client's next byte may reset the connection before the 408 is read.
    if answer:
        assert answer.startswith(b"HTTP/1.1 408 "), answer
        assert b"connection: close" in answer.lower()


def launched_bodies(bootstrap: str, namespace: str) -> list[bytes]:
    """The bodies of every TriggerLaunched in the namespace's runs topic."""
    found = asyncio.run(read_events(bootstrap, topics.named(topics.RUNS, namespace), timeout_s=0))
    events = [decode(r.value, [(k, v.encode()) for k, v in r.headers.items()]) for r in found]
    return [e.request.body() for e in events if isinstance(e, TriggerLaunched)]


def test_a_client_that_sends_its_headers_a_byte_a_second_is_cut_after_the_header_timeout(
    gateway: Gateway,
) -> None:
    body = b'{"slow": "headers"}'
    with gateway.connect() as sock:
        took, answer = trickle(sock, signed_launch(body) + body, 1.0, HEADER_TIMEOUT_S + 8)
    assert HEADER_TIMEOUT_S - 0.5 <= took <= HEADER_TIMEOUT_S + SLACK_S, took
    assert_timed_out(answer)


def test_a_client_that_sends_its_body_slowly_is_cut_and_nothing_is_appended(
    gateway: Gateway, kafka_bootstrap: str
) -> None:
    marker = uuid.uuid4().hex
    body = b'{"marker": "' + marker.encode() + b'", "pad": "' + b"x" * 40 + b'"}'
    with gateway.connect() as sock:
        sock.sendall(signed_launch(body))
        took, answer = trickle(sock, body, 0.5, BODY_TIMEOUT_S + 8)
    assert BODY_TIMEOUT_S - 0.5 <= took <= BODY_TIMEOUT_S + SLACK_S, took
    assert_timed_out(answer)

    # a launch that comes after it is acknowledged (so appended) and the cut one is not there
    later = f'{{"marker": "later-{marker}"}}'.encode()
    r = httpx.post(
        f"{gateway.url}/api/v0/launch/gh/",
        content=later,
        headers={
            "X-Hub-Signature-256": "sha256="
            + hmac.new(b"gh-secret", later, hashlib.sha256).hexdigest()
        },
        timeout=30,
    )
    assert r.status_code == 202, r.text
    appended = launched_bodies(kafka_bootstrap, gateway.namespace)
    assert later in appended
    assert not [b for b in appended if marker.encode() in b and b != later]


def test_a_body_sent_after_the_answer_is_cut_too_without_a_second_answer(
    gateway: Gateway,
) -> None:
    # /healthz answers without reading the body; the connection still has to end
    with gateway.connect() as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: gateway\r\nContent-Length: 1000\r\n\r\n")
        took, answer = trickle(sock, b"y" * 1000, 0.5, BODY_TIMEOUT_S + 8)
    assert took <= BODY_TIMEOUT_S + SLACK_S, took
    assert answer.startswith(b"HTTP/1.1 200 "), answer
    assert b"408" not in answer


def test_past_the_connection_cap_a_client_gets_503_at_once_and_is_served_once_slots_free(
    gateway: Gateway,
) -> None:
    slow = [gateway.connect() for _ in range(MAX_CONNECTIONS)]
    try:
        for sock in slow:
            sock.sendall(b"POST /api/v0/launch/gh/ HTTP/1.1\r\nHost: gateway\r\n")
        time.sleep(0.2)  # the gateway has accepted them

        started = time.monotonic()
        r = httpx.get(f"{gateway.url}/healthz", timeout=5)
        assert r.status_code == 503
        assert time.monotonic() - started < 1.0

        # the header deadline frees the slots; nobody has to close them
        deadline = time.monotonic() + HEADER_TIMEOUT_S + SLACK_S + 2
        while True:
            r = httpx.get(f"{gateway.url}/healthz", timeout=5)
            if r.status_code == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert r.status_code == 200, r.text
        assert time.monotonic() - started <= HEADER_TIMEOUT_S + SLACK_S + 0.5
    finally:
        for sock in slow:
            sock.close()

    # as many ordinary clients at once as the cap are all served
    clients = [gateway.connect() for _ in range(MAX_CONNECTIONS)]
    try:
        for sock in clients:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: gateway\r\n\r\n")
        for sock in clients:
            assert sock.recv(4096).startswith(b"HTTP/1.1 200 ")
    finally:
        for sock in clients:
            sock.close()
