"""A local broker that accepts only SCRAM-SHA-512 over TLS, with a CA made for it (tests).

The CA and the broker's certificate are made with the ``openssl`` command; Kafka reads them as
PEM files (``ssl.keystore.type=PEM``). The SCRAM users are created when the data dir is
formatted (``kafka-storage format --add-scram``), so their passwords belong to the
:class:`SecureKafka` object that first started the data dir.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from hookrun.dev.kafka import LocalKafka
from hookrun.dev.kafka_dist import DEFAULT_PORT, START_TIMEOUT_S, KafkaError
from hookrun.dev.kafka_net import broker_answers
from hookrun.events.security import KafkaSecurity

MECHANISM = "SCRAM-SHA-512"
USERNAME = "hookrun"
#: The broker's own user, for the connections it makes to its own listener.
BROKER_USERNAME = "broker"
DAYS = 30


def _openssl(args: Sequence[str], cwd: Path) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        raise KafkaError("openssl is not on PATH: it makes the test CA of the secured broker")
    result = subprocess.run(
        [openssl, *args], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    if result.returncode != 0:
        raise KafkaError(f"openssl {args[0]} failed (exit {result.returncode}):\n{result.stdout}")


def make_ca(directory: Path, name: str = "ca") -> Path:
    """Make a CA in ``directory``: ``<name>.pem`` (its certificate, returned) and ``<name>.key``."""
    directory.mkdir(parents=True, exist_ok=True)
    _openssl(
        [
            "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", str(DAYS),
            "-subj", f"/CN=hookrun test {name}",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        ],
        directory,
    )  # fmt: skip
    return directory / f"{name}.pem"


def make_certificate(
    ca: Path, name: str, hosts: Sequence[str] = ("127.0.0.1", "localhost")
) -> Path:
    """Make a certificate for ``hosts`` signed by the CA ``ca`` (made by :func:`make_ca`).

    Returns ``<name>.pem`` beside the CA: the private key (PKCS#8) and then the certificate,
    the layout of Kafka's PEM keystore.
    """
    directory = ca.parent
    names = ",".join(f"IP:{h}" if h.replace(".", "").isdigit() else f"DNS:{h}" for h in hosts)
    (directory / f"{name}.ext").write_text(
        f"subjectAltName={names}\nbasicConstraints=CA:FALSE\n"
        "keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth,clientAuth\n"
        "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n"
    )
    _openssl(
        [
            "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={hosts[0]}",
        ],
        directory,
    )  # fmt: skip
    _openssl(
        [
            "x509", "-req", "-in", f"{name}.csr", "-CA", ca.name, "-CAkey", f"{ca.stem}.key",
            "-set_serial", f"0x{secrets.token_hex(16)}", "-days", str(DAYS),
            "-extfile", f"{name}.ext", "-out", f"{name}.crt",
        ],
        directory,
    )  # fmt: skip
    pem = directory / f"{name}.pem"
    pem.write_text(
        (directory / f"{name}.key").read_text() + (directory / f"{name}.crt").read_text()
    )
    os.chmod(pem, 0o600)
    return pem


class SecureKafka(LocalKafka):
    """A :class:`LocalKafka` whose only client listener is SASL_SSL with SCRAM-SHA-512.

    The controller listener speaks TLS too, so nothing on it accepts plaintext. Clients
    connect as :data:`USERNAME` with :attr:`password`, trusting :attr:`cafile`
    (:meth:`security`, :meth:`client_env`).
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        port: int = DEFAULT_PORT,
        *,
        password: str | None = None,
        die_with_parent: bool = False,
    ) -> None:
        super().__init__(data_dir, port, die_with_parent=die_with_parent)
        self.password = password or secrets.token_hex(16)
        self._broker_password = secrets.token_hex(16)
        self.format_options = [
            option
            for user, secret in (
                (BROKER_USERNAME, self._broker_password),
                (USERNAME, self.password),
            )
            for option in ("--add-scram", f"{MECHANISM}=[name={user},password={secret}]")
        ]

    def __repr__(self) -> str:
        return f"SecureKafka(port={self.port}, data_dir={str(self.data_dir)!r}, pid={self.pid})"

    @property
    def tls_dir(self) -> Path:
        return self.data_dir / "tls"

    @property
    def cafile(self) -> Path:
        """The CA that signed the broker's certificate."""
        return self.tls_dir / "ca.pem"

    def security(self, *, password: str | None = None, cafile: Path | None = None) -> KafkaSecurity:
        """How a client reaches the broker (another password or CA: how one is refused)."""
        return KafkaSecurity.model_validate(
            {
                "protocol": "SASL_SSL",
                "sasl_mechanism": MECHANISM,
                "sasl_username": USERNAME,
                "sasl_password": password if password is not None else self.password,
                "ssl_cafile": cafile or self.cafile,
            }
        )

    def client_env(
        self, *, password: str | None = None, cafile: Path | None = None
    ) -> dict[str, str]:
        """The ``KAFKA_*`` environment of a service that connects to the broker."""
        return {
            "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
            "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "KAFKA_SASL_MECHANISM": MECHANISM,
            "KAFKA_SASL_USERNAME": USERNAME,
            "KAFKA_SASL_PASSWORD": password if password is not None else self.password,
            "KAFKA_SSL_CAFILE": str(cafile or self.cafile),
        }

    def answers(self, timeout: float = 2.0) -> bool:
        return broker_answers(self.bootstrap, timeout, security=self.security())

    def start(self, timeout: float = START_TIMEOUT_S, *, wait: bool = True) -> SecureKafka:
        """Make the CA and the broker's certificate if missing, then start (see LocalKafka)."""
        if not (self.tls_dir / "broker.pem").exists():
            make_certificate(make_ca(self.tls_dir), "broker")
        super().start(timeout, wait=wait)
        return self

    def _listener_config(self) -> list[str]:
        port, cport, tls = self.port, self.controller_port, self.tls_dir.as_posix()
        jaas = (
            "org.apache.kafka.common.security.scram.ScramLoginModule required "
            f'username="{BROKER_USERNAME}" password="{self._broker_password}";'
        )
        return [
            f"listeners=SASL_SSL://127.0.0.1:{port},CONTROLLER://127.0.0.1:{cport}",
            f"advertised.listeners=SASL_SSL://127.0.0.1:{port}",
            "listener.security.protocol.map=SASL_SSL:SASL_SSL,CONTROLLER:SSL",
            "inter.broker.listener.name=SASL_SSL",
            f"sasl.enabled.mechanisms={MECHANISM}",
            f"sasl.mechanism.inter.broker.protocol={MECHANISM}",
            f"listener.name.sasl_ssl.{MECHANISM.lower()}.sasl.jaas.config={jaas}",
            "ssl.keystore.type=PEM",
            f"ssl.keystore.location={tls}/broker.pem",
            "ssl.truststore.type=PEM",
            f"ssl.truststore.location={tls}/ca.pem",
        ]
