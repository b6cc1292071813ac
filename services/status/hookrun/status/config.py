"""Status service settings, read from the environment (the only place that reads them is app.py)."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, Field, NonNegativeInt, PositiveFloat, PositiveInt, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from hookrun.config.sealing import SecretsKey
from hookrun.events import limits, topics
from hookrun.events.logs import LogFormat
from hookrun.status import guard


def shown_url(url: str) -> str:
    """``url`` as a message may show it: whatever stands between the user and ``@`` (the
    password) becomes ``***``, also in a URL too malformed to parse."""
    head, at, host = url.rpartition("@")
    if not at:
        return url
    scheme, sep, userinfo = head.partition("://")
    if not sep:
        scheme, userinfo = "", head
    user = userinfo.split(":", 1)[0]
    return f"{scheme}{sep}{user}:***@{host}"


def _trusted_proxies(value: str) -> str:
    """``*`` or IPs and CIDRs, comma-separated; a typo would silently trust no proxy."""
    for item in (part.strip() for part in value.split(",")):
        if item != "*":
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(f"{item!r} is not an IP address, a CIDR or *") from None
    return value


TrustedProxies = Annotated[str, AfterValidator(_trusted_proxies)]


class Settings(BaseSettings):
    """Environment of the status service; defaults suit `make run` and `docker compose up`."""

    # A bad secret (HOOKRUN_SECRETS_KEY, ...) is named in the error, never echoed.
    model_config = SettingsConfigDict(extra="ignore", hide_input_in_errors=True)

    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    hookrun_config: Path = Path("examples/hookrun.yaml")
    #: First segment of every topic name, so several systems (or test modules) share a broker.
    hookrun_namespace: str = topics.NAMESPACE
    #: ``sqlite:///<path>`` (one file per instance, a full replica) or ``postgresql://...``
    #: (shared by every instance of the consumer group).
    hookrun_database_url: str = "sqlite:///.hookrun/status.db"
    hookrun_status_host: str = "127.0.0.1"
    hookrun_status_port: PositiveInt = 8001
    #: Bearer token of the admin API; unset disables it (503 "admin API disabled").
    hookrun_admin_token: SecretStr | None = None
    #: Wrong admin tokens (API or dashboard sign-in) one client address may send per window;
    #: past it its attempts get 429 with Retry-After until the window ends (guard.py).
    hookrun_admin_max_failures: PositiveInt = guard.MAX_FAILURES
    #: That window's length in seconds, from the address's first wrong token.
    hookrun_admin_failure_window_s: PositiveFloat = guard.WINDOW_S
    #: Peers whose X-Forwarded-For names the client (comma-separated IPs or CIDRs, or ``*``):
    #: the gateway, which sets it. uvicorn's variable of the same name, applied by the app.
    forwarded_allow_ips: TrustedProxies = "127.0.0.1,::1"
    #: Fernet key(s) sealing the secrets of subscriptions made through the API on Kafka
    #: (comma-separated, the first seals); unset: they are stored as given (docs/security.md).
    hookrun_secrets_key: SecretsKey | None = None

    #: Key that signs the dashboard's session cookies; unset: a random key per process, so
    #: sessions end when it restarts and do not carry over to another instance.
    hookrun_ui_session_key: SecretStr | None = None
    #: How long a dashboard session lasts after sign-in.
    hookrun_ui_session_ttl_s: PositiveInt = 12 * 3600
    #: Largest run-info / admin request body read.
    hookrun_max_body_bytes: PositiveInt = 1024 * 1024
    #: Deepest JSON body a test launch accepts; a deeper one is refused (400) before anything is
    #: appended, as the gateway refuses such a launch.
    hookrun_max_json_depth: Annotated[int, Field(ge=1, le=limits.MAX_JSON_DEPTH_CEILING)] = (
        limits.MAX_JSON_DEPTH
    )
    #: Consumer group of the instances sharing one PostgreSQL store.
    hookrun_status_group: str = "status"
    #: How long a read waits for the projection to reach the log end of a run's partition.
    hookrun_status_catch_up_timeout_s: PositiveFloat = 5.0
    #: Most records applied in one database transaction.
    hookrun_status_batch_records: PositiveInt = 2000
    #: TEST ONLY: sleep this long in the middle of every batch's transaction (lag, crash tests).
    hookrun_status_apply_delay_ms: NonNegativeInt = 0
    #: Processes a rebuild projects with, each its share of the partitions (0: one per CPU).
    hookrun_rebuild_workers: NonNegativeInt = 0
    hookrun_kafka_timeout_s: PositiveFloat = 5.0
    #: How long the trigger log keeps the entries that started no run (rejected, duplicate, filtered, rate-limited):
    #: the rows here and ``hookrun.triggers``'s retention (``retention``).
    hookrun_trigger_log_retention_s: PositiveInt = topics.TRIGGER_LOG_RETENTION_S
    #: How often rows past that retention are deleted.
    hookrun_trigger_log_prune_interval_s: PositiveFloat = 3600.0
    hookrun_access_log: bool = False
    log_level: str = "INFO"
    #: text (the default) or json: one JSON object per line (hookrun.events.logs).
    log_format: LogFormat = "text"


def sqlite_path(url: str) -> Path | None:
    """The file of a ``sqlite:///`` URL (``sqlite:////abs`` is absolute), else None."""
    if url.startswith("sqlite:///"):
        return Path(url[len("sqlite:///") :])
    return None
