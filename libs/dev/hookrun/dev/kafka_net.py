"""Asking about brokers and ports: does a broker answer, which port is free, is Docker there."""

from __future__ import annotations

import socket
import struct
import time

from hookrun.dev.kafka_dist import START_TIMEOUT_S, KafkaError


def _split_host_port(address: str) -> tuple[str, int]:
    host, _, port = address.strip().rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("connection closed by the peer")
        buf += chunk
    return bytes(buf)


def _metadata_brokers(address: str, timeout: float) -> int:
    """Send a Kafka Metadata v4 request and return how many brokers the answer lists."""
    # A raw request instead of an aiokafka client keeps this synchronous, so it works from the
    # CLI, from sync fixtures and from inside a running event loop alike. The port being open is
    # not enough: the broker binds it early but only serves requests once it has started.
    host, port = _split_host_port(address)
    client_id = b"hookrun-probe"
    header = struct.pack(">hhih", 3, 4, 1, len(client_id)) + client_id
    body = struct.pack(">ib", 0, 0)  # no topics, allow_auto_topic_creation=false
    request = header + body
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.settimeout(timeout)
        sock.sendall(struct.pack(">i", len(request)) + request)
        (size,) = struct.unpack(">i", _recv_exact(sock, 4))
        payload = _recv_exact(sock, size)
    correlation_id, _throttle_ms, broker_count = struct.unpack(">iii", payload[:12])
    if correlation_id != 1:
        raise ConnectionError("not a Kafka answer")
    return int(broker_count)


def broker_answers(bootstrap: str, timeout: float = 2.0) -> bool:
    """Return True if a Kafka broker at any address of ``bootstrap`` serves a metadata request."""
    for address in bootstrap.split(","):
        try:
            if _metadata_brokers(address, timeout) > 0:
                return True
        except (OSError, ValueError, struct.error):
            continue
    return False


def wait_for_broker(bootstrap: str, timeout: float = START_TIMEOUT_S) -> None:
    """Block until ``bootstrap`` answers metadata requests; raise KafkaError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not broker_answers(bootstrap, timeout=min(2.0, timeout)):
        if time.monotonic() >= deadline:
            raise KafkaError(f"no Kafka broker answered on {bootstrap} within {timeout:.0f} s")
        time.sleep(0.2)


def docker_available() -> bool:
    """Return True only if a Docker engine really answers (not just a docker CLI or package)."""
    try:
        import docker  # type: ignore[import-untyped]  # dev-only dependency, untyped

        client = docker.from_env(timeout=3)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:  # any failure (no package, no socket, refused, timeout) means "no"
        return False


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # Java sets SO_REUSEADDR on its server sockets, so TIME_WAIT leftovers of a broker we
        # just stopped do not block it; mirror that so we do not refuse a usable port.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def wait_port_free(port: int, timeout: float) -> bool:
    # Sockets of a process that has just been stopped can take a moment to close.
    deadline = time.monotonic() + timeout
    while not port_free(port):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
    return True
