"""Asking about brokers and ports: does a broker answer, which port is free, is Docker there."""

from __future__ import annotations

import socket
import ssl
import struct
import time

from hookrun.dev.kafka_dist import START_TIMEOUT_S, KafkaError
from hookrun.events.security import KafkaSecurity, KafkaSecurityError


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


def _api_versions(address: str, timeout: float, tls: ssl.SSLContext | None) -> None:
    """Send an ApiVersions v0 request (over TLS with ``tls``); raise unless the broker answers.

    A SASL listener serves ApiVersions before authentication and nothing else, so this is the
    probe of a secured listener: the broker answers once it has started.
    """
    host, port = _split_host_port(address)
    client_id = b"hookrun-probe"
    request = struct.pack(">hhih", 18, 0, 1, len(client_id)) + client_id
    with socket.create_connection((host, port), timeout=timeout) as raw:
        sock = tls.wrap_socket(raw, server_hostname=host) if tls is not None else raw
        sock.settimeout(timeout)
        sock.sendall(struct.pack(">i", len(request)) + request)
        (size,) = struct.unpack(">i", _recv_exact(sock, 4))
        correlation_id, error_code = struct.unpack(">ih", _recv_exact(sock, size)[:6])
    if correlation_id != 1 or error_code != 0:
        raise ConnectionError("not a Kafka answer")


def _answers(address: str, timeout: float, security: KafkaSecurity | None) -> bool:
    if security is None or security.protocol == "PLAINTEXT":
        return _metadata_brokers(address, timeout) > 0
    _api_versions(address, timeout, security.ssl_context() if security.uses_tls else None)
    return True


def brokers_listed(address: str, timeout: float = 2.0) -> int:
    """How many brokers the plaintext broker at ``address`` lists (0: it does not answer)."""
    try:
        return _metadata_brokers(address, timeout)
    except (OSError, ValueError, struct.error):
        return 0


def env_security() -> KafkaSecurity:
    """The clients' security settings from the environment; KafkaError when they are invalid."""
    try:
        return KafkaSecurity.from_env()
    except KafkaSecurityError as exc:
        raise KafkaError(f"kafka security settings: {exc}") from exc


def broker_answers(
    bootstrap: str, timeout: float = 2.0, *, security: KafkaSecurity | None = None
) -> bool:
    """Return True if a Kafka broker at any address of ``bootstrap`` serves requests.

    ``security`` is how to reach it (default: plaintext).
    """
    return _last_error(bootstrap, timeout, security) is None


def _last_error(bootstrap: str, timeout: float, security: KafkaSecurity | None) -> str | None:
    """None when a broker of ``bootstrap`` answers, else why the last one did not."""
    error = "no address"
    for address in bootstrap.split(","):
        try:
            if _answers(address, timeout, security):
                return None
            error = f"{address}: no broker listed"
        except (OSError, ValueError, struct.error) as exc:
            error = f"{address}: {exc}"
    return error


def wait_for_broker(
    bootstrap: str, timeout: float = START_TIMEOUT_S, *, security: KafkaSecurity | None = None
) -> None:
    """Block until ``bootstrap`` answers requests; raise KafkaError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while (error := _last_error(bootstrap, min(2.0, timeout), security)) is not None:
        if time.monotonic() >= deadline:
            raise KafkaError(
                f"no Kafka broker answered on {bootstrap} within {timeout:.0f} s ({error})"
            )
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
