"""Kafka security settings from the environment, on every client, and the start check."""

from __future__ import annotations

import ssl
import subprocess
import sys
from pathlib import Path

import pytest

from hookrun.dev.kafka_net import free_port
from hookrun.events import admin
from hookrun.events.clients import admin_settings, consumer_settings, producer_settings
from hookrun.events.security import (
    KafkaAccessDenied,
    KafkaSecurity,
    KafkaSecurityError,
    check_access,
)

SCRAM = {
    "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
    "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
    "KAFKA_SASL_USERNAME": "hookrun",
    "KAFKA_SASL_PASSWORD": "s3cret-pw",
}


def test_no_settings_mean_plaintext_and_add_nothing_to_the_clients() -> None:
    security = KafkaSecurity.from_env({})

    assert security.protocol == "PLAINTEXT"
    assert security.client_settings() == {}


def test_sasl_ssl_settings_give_the_clients_credentials_and_a_verifying_tls_context() -> None:
    settings = KafkaSecurity.from_env(SCRAM).client_settings()

    context = settings.pop("ssl_context")
    assert settings == {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "hookrun",
        "sasl_plain_password": "s3cret-pw",
    }
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode is ssl.CERT_REQUIRED and context.check_hostname


def test_every_client_gets_the_security_settings_of_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in SCRAM.items():
        monkeypatch.setenv(name, value)

    for settings in (
        producer_settings("b:9092", "gateway"),
        consumer_settings("b:9092", "runner", group="runner"),
        admin_settings("b:9092"),
    ):
        assert settings["security_protocol"] == "SASL_SSL"
        assert settings["sasl_plain_password"] == "s3cret-pw"


def test_the_password_may_come_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "password"
    path.write_text("from-a-file\n")
    env = {k: v for k, v in SCRAM.items() if k != "KAFKA_SASL_PASSWORD"}

    security = KafkaSecurity.from_env({**env, "KAFKA_SASL_PASSWORD_FILE": str(path)})

    assert security.sasl_password is not None
    assert security.sasl_password.get_secret_value() == "from-a-file"


@pytest.mark.parametrize(
    ("env", "reason"),
    [
        ({"KAFKA_SECURITY_PROTOCOL": "TLS"}, "KAFKA_SECURITY_PROTOCOL: Input should be"),
        ({**SCRAM, "KAFKA_SASL_MECHANISM": "GSSAPI"}, "KAFKA_SASL_MECHANISM: Input should be"),
        (
            {"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_USERNAME": "u"},
            "SASL_SSL needs KAFKA_SASL_MECHANISM, KAFKA_SASL_PASSWORD",
        ),
        ({"KAFKA_SASL_USERNAME": "u"}, "SASL settings need KAFKA_SECURITY_PROTOCOL"),
        ({"KAFKA_SSL_CAFILE": "/ca.pem"}, "TLS files need KAFKA_SECURITY_PROTOCOL SSL"),
        (
            {"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_KEYFILE": "/k.pem"},
            "KAFKA_SSL_KEYFILE needs KAFKA_SSL_CERTFILE",
        ),
        (
            {**SCRAM, "KAFKA_SASL_PASSWORD_FILE": "/p"},
            "set KAFKA_SASL_PASSWORD or KAFKA_SASL_PASSWORD_FILE, not both",
        ),
        (
            {"KAFKA_SASL_PASSWORD_FILE": "/nonexistent/password"},
            "KAFKA_SASL_PASSWORD_FILE: /nonexistent/password: No such file or directory",
        ),
    ],
)
def test_inconsistent_settings_are_refused_with_a_reason_that_names_the_variable(
    env: dict[str, str], reason: str
) -> None:
    with pytest.raises(KafkaSecurityError) as refused:
        KafkaSecurity.from_env(env)

    assert str(refused.value).startswith(reason)
    assert "s3cret-pw" not in str(refused.value)


def test_an_unreadable_ca_file_is_refused_with_its_variable() -> None:
    security = KafkaSecurity.from_env({**SCRAM, "KAFKA_SSL_CAFILE": "/nonexistent/ca.pem"})

    with pytest.raises(KafkaSecurityError, match=r"^KAFKA_SSL_CAFILE: No such file"):
        security.client_settings()


def test_the_description_names_the_user_but_never_the_password() -> None:
    security = KafkaSecurity.from_env(SCRAM)

    assert security.describe() == "SASL_SSL SCRAM-SHA-512 as 'hookrun'"
    assert "s3cret-pw" not in repr(security)


async def test_a_broker_that_does_not_answer_yet_is_an_error_to_retry_not_a_refusal() -> None:
    with pytest.raises(OSError) as raised:
        await check_access(f"127.0.0.1:{free_port()}", KafkaSecurity.from_env(SCRAM))

    assert not isinstance(raised.value, KafkaAccessDenied)


async def test_a_refusal_at_start_ends_the_service_instead_of_retrying(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def refuse(bootstrap: str) -> None:
        raise KafkaAccessDenied("kafka: authentication failed")

    def exit_at_start(reason: str) -> None:
        raise SystemExit(reason)

    monkeypatch.setattr(admin, "check_access", refuse)
    monkeypatch.setattr(admin, "exit_at_start", exit_at_start)

    with pytest.raises(SystemExit, match=r"^kafka: authentication failed$"):
        await admin.ensure_topics_forever("127.0.0.1:9")


def test_invalid_settings_end_a_process_with_one_line_and_exit_code_2() -> None:
    code = "from hookrun.events.clients import producer_settings; producer_settings('b:1', 's')"
    env = {"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "PATH": "/usr/bin:/bin"}

    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )

    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "hookrun: kafka security settings: SASL_SSL needs KAFKA_SASL_MECHANISM, "
        "KAFKA_SASL_PASSWORD, KAFKA_SASL_USERNAME"
    ]
