"""The services on a broker that accepts only SCRAM-SHA-512 over TLS, and what stops them."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hookrun.dev.kafka_secure import SecureKafka, make_ca
from hookrun.dev.procs import ServiceProcess
from tests.e2e.support import System, run_id_of

pytestmark = pytest.mark.kafka

SERVICES = ["gateway", "status", "runner", "notifier"]


@pytest.fixture(scope="module")
def system(secure_kafka: SecureKafka, tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    started = System(
        secure_kafka.bootstrap, tmp_path_factory.mktemp("secure"), env=secure_kafka.client_env()
    )
    try:
        yield started.start()
    finally:
        started.stop()


def test_a_launch_on_the_sasl_ssl_broker_ends_in_a_verified_notification(system: System) -> None:
    run_id = run_id_of(system.launch("gh-ok", {"n": 7}))

    info = system.finished_info("gh-ok", run_id)
    body = system.notification(run_id)  # signature and schema verified

    assert info["status"] == "completed", info
    assert (body["id"], body["status"], body["ok"]) == (run_id, "SUCCESS", True)
    assert list(body["output"].values()) == [{"params": {"n": 7}, "payload": {"n": 7}}]


def start_refused(
    tmp_path: Path, secure_kafka: SecureKafka, service: str, env: dict[str, str]
) -> tuple[int, list[str], float]:
    """Start ``service`` alone with ``env``; return its exit code, its output lines and how
    long it ran (it is killed, and the test fails, if it is still running after a minute)."""
    system = System(secure_kafka.bootstrap, tmp_path, env=env)
    system.receiver.start()
    [proc] = [p for p in system.procs if p.name == service]
    try:
        started = time.monotonic()
        proc.start(wait_s=0)
        assert proc.proc is not None
        try:
            code = proc.proc.wait(60)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{service} still runs after 60 s:\n{proc.tail()}") from None
        return code, _lines(proc), time.monotonic() - started
    finally:
        system.stop()


def _lines(proc: ServiceProcess) -> list[str]:
    return proc.log_path.read_text(errors="replace").splitlines()


@pytest.mark.parametrize("service", SERVICES)
def test_a_wrong_password_stops_the_service_at_start_with_a_one_line_reason(
    secure_kafka: SecureKafka, tmp_path: Path, service: str
) -> None:
    wrong = "not-the-password-0123"
    env = secure_kafka.client_env(password=wrong)

    code, lines, took = start_refused(tmp_path, secure_kafka, service, env)

    assert code == 2, "\n".join(lines)
    assert lines[-1].startswith(
        f"hookrun {service}: kafka: authentication failed at {secure_kafka.bootstrap} "
        "(SASL_SSL SCRAM-SHA-512 as 'hookrun'): "
    ), "\n".join(lines)
    assert "SaslAuthenticationFailed" in lines[-1]
    assert not any(wrong in line or secure_kafka.password in line for line in lines)
    assert took < 30, took


@pytest.mark.parametrize("service", SERVICES)
def test_an_untrusted_certificate_stops_the_service_at_start_with_a_one_line_reason(
    secure_kafka: SecureKafka, tmp_path: Path, service: str
) -> None:
    other_ca = make_ca(tmp_path / "other-ca")
    env = secure_kafka.client_env(cafile=other_ca)

    code, lines, took = start_refused(tmp_path, secure_kafka, service, env)

    assert code == 2, "\n".join(lines)
    assert lines[-1] == (
        f"hookrun {service}: kafka: the certificate of the broker at {secure_kafka.bootstrap} "
        f"is not trusted by {other_ca}: unable to get local issuer certificate"
    ), "\n".join(lines)
    assert not any(secure_kafka.password in line for line in lines)
    assert took < 30, took
