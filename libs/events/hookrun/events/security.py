"""Kafka security (TLS, SASL) of every hookrun client, from the environment, and the start check.

Every producer, consumer and admin client gets :func:`security_settings` through the settings
functions of :mod:`hookrun.events.clients`. A service checks at start that the brokers accept
it (:func:`check_access`, called by ``ensure_topics_forever``): a refused password or an
untrusted certificate ends the process with one line and exit code 2 (:func:`exit_at_start`)
instead of retrying for ever, while a broker that does not answer yet is waited for.
"""

from __future__ import annotations

import os
import ssl
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, NoReturn

from aiokafka.conn import collect_hosts, create_conn
from aiokafka.errors import (
    AuthenticationFailedError,
    AuthenticationMethodNotSupported,
    IllegalSaslStateError,
    KafkaError,
    SaslAuthenticationFailed,
    UnsupportedSaslMechanismError,
)
from pydantic import BaseModel, ConfigDict, SecretStr, ValidationError, model_validator

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]

#: The environment variable of each field.
ENV = {
    "protocol": "KAFKA_SECURITY_PROTOCOL",
    "sasl_mechanism": "KAFKA_SASL_MECHANISM",
    "sasl_username": "KAFKA_SASL_USERNAME",
    "sasl_password": "KAFKA_SASL_PASSWORD",
    "ssl_cafile": "KAFKA_SSL_CAFILE",
    "ssl_certfile": "KAFKA_SSL_CERTFILE",
    "ssl_keyfile": "KAFKA_SSL_KEYFILE",
}
PASSWORD_FILE = "KAFKA_SASL_PASSWORD_FILE"

_AUTH_ERRORS = (
    SaslAuthenticationFailed,
    UnsupportedSaslMechanismError,
    IllegalSaslStateError,
    AuthenticationFailedError,
    AuthenticationMethodNotSupported,
)
# The connection ended during the handshake: a broker starting or stopping, not a refusal.
_TLS_CUT = (ssl.SSLEOFError, ssl.SSLZeroReturnError, ssl.SSLSyscallError)


class KafkaSecurityError(ValueError):
    """The ``KAFKA_*`` security settings are inconsistent, or a file they name is unreadable."""


class KafkaAccessDenied(Exception):
    """A broker refused the credentials, or its certificate is not trusted: retrying cannot help."""


class KafkaSecurity(BaseModel):
    """How clients connect: the protocol, the SASL credentials and the TLS files."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    protocol: SecurityProtocol = "PLAINTEXT"
    sasl_mechanism: SaslMechanism | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None

    @property
    def uses_tls(self) -> bool:
        return self.protocol in ("SSL", "SASL_SSL")

    @property
    def uses_sasl(self) -> bool:
        return self.protocol in ("SASL_PLAINTEXT", "SASL_SSL")

    @model_validator(mode="after")
    def _consistent(self) -> KafkaSecurity:
        given = {name for name in ENV if getattr(self, name) is not None} - {"protocol"}
        sasl = {"sasl_mechanism", "sasl_username", "sasl_password"}
        if self.uses_sasl:
            missing = [ENV[name] for name in sorted(sasl - given)]
            if missing:
                raise ValueError(f"{self.protocol} needs {', '.join(missing)}")
        elif given & sasl:
            # Credentials without a SASL protocol would be silently unused.
            raise ValueError(
                f"SASL settings need KAFKA_SECURITY_PROTOCOL SASL_SSL or SASL_PLAINTEXT, "
                f"not {self.protocol}"
            )
        if not self.uses_tls and given - sasl:
            raise ValueError(
                f"TLS files need KAFKA_SECURITY_PROTOCOL SSL or SASL_SSL, not {self.protocol}"
            )
        if self.ssl_keyfile is not None and self.ssl_certfile is None:
            raise ValueError("KAFKA_SSL_KEYFILE needs KAFKA_SSL_CERTFILE")
        return self

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> KafkaSecurity:
        """Read the ``KAFKA_*`` variables (unset or empty: not given).

        The password may come from the file named by ``KAFKA_SASL_PASSWORD_FILE`` instead
        (its trailing line break dropped). Raises :class:`KafkaSecurityError` with a one-line
        reason naming the variable; the reason never holds the password.
        """
        env = os.environ if environ is None else environ
        values: dict[str, str] = {
            name: env[var].strip() if name != "sasl_password" else env[var]
            for name, var in ENV.items()
            if env.get(var, "").strip()
        }
        if env.get(PASSWORD_FILE, "").strip():
            if "sasl_password" in values:
                raise KafkaSecurityError(f"set KAFKA_SASL_PASSWORD or {PASSWORD_FILE}, not both")
            path = env[PASSWORD_FILE].strip()
            try:
                values["sasl_password"] = Path(path).read_text().rstrip("\r\n")
            except OSError as exc:
                raise KafkaSecurityError(f"{PASSWORD_FILE}: {path}: {exc.strerror}") from exc
        if "protocol" in values:
            values["protocol"] = values["protocol"].upper()
        if "sasl_mechanism" in values:
            values["sasl_mechanism"] = values["sasl_mechanism"].upper()
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            # Only the place and the message: an input value could be the password.
            error = exc.errors(include_input=False)[0]
            where = ENV.get(str(error["loc"][0]), "") if error["loc"] else ""
            message = str(error["msg"]).removeprefix("Value error, ")
            raise KafkaSecurityError(f"{where}: {message}" if where else message) from None

    def describe(self) -> str:
        """The protocol, mechanism and user, for messages (never the password)."""
        if self.uses_sasl:
            return f"{self.protocol} {self.sasl_mechanism} as {self.sasl_username!r}"
        return self.protocol

    def ssl_context(self) -> ssl.SSLContext:
        """A TLS context that verifies the broker against ``ssl_cafile`` (else the system's CAs)
        and its host name, and presents the client certificate when one is given.

        Raises :class:`KafkaSecurityError` when a file cannot be read or used.
        """
        name = "KAFKA_SSL_CAFILE"
        try:
            context = ssl.create_default_context(cafile=self.ssl_cafile)
            if self.ssl_certfile is not None:
                name = "KAFKA_SSL_CERTFILE"
                context.load_cert_chain(self.ssl_certfile, self.ssl_keyfile)
        except (OSError, ssl.SSLError) as exc:
            reason = exc.strerror or getattr(exc, "reason", None) or str(exc)
            raise KafkaSecurityError(f"{name}: {reason}") from exc
        return context

    def client_settings(self) -> dict[str, Any]:
        """The keyword arguments of aiokafka's clients; none for ``PLAINTEXT``."""
        if self.protocol == "PLAINTEXT":
            return {}
        settings: dict[str, Any] = {"security_protocol": self.protocol}
        if self.uses_tls:
            settings["ssl_context"] = self.ssl_context()
        if self.uses_sasl:
            assert self.sasl_password is not None  # checked by _consistent
            settings |= {
                "sasl_mechanism": self.sasl_mechanism,
                "sasl_plain_username": self.sasl_username,
                "sasl_plain_password": self.sasl_password.get_secret_value(),
            }
        return settings


def program() -> str:
    """``hookrun <service>`` for ``python -m hookrun.<service>``, else the script's name."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    parts = spec.name.split(".") if spec is not None else []
    if len(parts) >= 2 and parts[0] == "hookrun":
        return f"hookrun {parts[1]}"
    script = sys.argv[0] if sys.argv else ""
    return Path(script).name if script not in ("", "-c") else "hookrun"


def exit_at_start(reason: str) -> NoReturn:
    """Write ``<program>: <reason>`` as one line to stderr and end the process with exit code 2.

    At once (``os._exit``): the caller may run inside uvicorn's lifespan, which turns any
    exception, SystemExit too, into a logged traceback, or in a background task whose
    exception nobody awaits. It runs at start, before the process acknowledged anything.
    """
    sys.stdout.flush()
    sys.stderr.write(f"{program()}: {' '.join(reason.split())}\n")
    sys.stderr.flush()
    os._exit(2)


def security_settings() -> dict[str, Any]:
    """The security settings of every client, from the environment (:meth:`KafkaSecurity.from_env`).

    Invalid settings end the process at start with one line (:func:`exit_at_start`).
    """
    try:
        return KafkaSecurity.from_env().client_settings()
    except KafkaSecurityError as exc:
        exit_at_start(f"kafka security settings: {exc}")


async def check_access(
    bootstrap: str, security: KafkaSecurity | None = None, *, timeout_s: float = 10.0
) -> None:
    """Connect and authenticate to the brokers of ``bootstrap`` as every client will.

    Returns once one broker accepted. Raises :class:`KafkaAccessDenied` when a broker refused
    the credentials or the TLS handshake (an untrusted certificate, a host name that does not
    match); otherwise, when no broker answered, the last connection error (``OSError``,
    ``KafkaError`` or ``TimeoutError``), which a retry may cure. ``security`` defaults to the
    environment's.
    """
    if security is None:
        security = KafkaSecurity.from_env()
    settings = security.client_settings()
    last: Exception = KafkaError(f"no broker address in {bootstrap!r}")
    for host, port, _ in collect_hosts(bootstrap):
        where = f"{host}:{port}"
        try:
            conn = await create_conn(
                host,
                port,
                client_id="hookrun-check",
                request_timeout_ms=int(timeout_s * 1000),
                **settings,
            )
        except ssl.SSLCertVerificationError as exc:
            trust = security.ssl_cafile or "the system's CAs"
            raise KafkaAccessDenied(
                f"kafka: the certificate of the broker at {where} is not trusted by {trust}: "
                f"{exc.verify_message}"
            ) from exc
        except _TLS_CUT as exc:
            last = exc
        except ssl.SSLError as exc:
            raise KafkaAccessDenied(
                f"kafka: the TLS handshake with the broker at {where} failed: {exc.reason or exc}"
            ) from exc
        except _AUTH_ERRORS as exc:
            raise KafkaAccessDenied(
                f"kafka: authentication failed at {where} ({security.describe()}): {exc}"
            ) from exc
        except (OSError, KafkaError, TimeoutError) as exc:
            last = exc
        else:
            conn.close()
            return
    raise last
