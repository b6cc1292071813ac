"""Notifier settings, read from the environment (the only place that reads them is app.py)."""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field, PositiveInt, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from hookrun.config.sealing import SecretsKey
from hookrun.events import topics
from hookrun.events.logs import LogFormat


class Settings(BaseSettings):
    """Environment of the notifier; defaults suit `make run` and `docker compose up`."""

    # A bad secret (HOOKRUN_SECRETS_KEY, ...) is named in the error, never echoed.
    model_config = SettingsConfigDict(extra="ignore", hide_input_in_errors=True)

    hookrun_config: Path = Path("examples/hookrun.yaml")
    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    #: First segment of every topic name, so several systems (or test modules) share a broker.
    hookrun_namespace: str = topics.NAMESPACE
    log_level: str = "INFO"
    #: text (the default) or json: one JSON object per line (hookrun.events.logs).
    log_format: LogFormat = "text"
    #: Overrides `notifier.retry_schedule_s` of the config file, e.g. "0,1,2" (tests compress it).
    hookrun_notifier_retry_schedule_s: tuple[float, ...] | None = None
    #: Concurrent attempts per subscription: one slow subscriber only ever holds its own slots.
    hookrun_notifier_concurrency: PositiveInt = 32
    #: Port of GET /metrics, /healthz and /readyz (HOOKRUN_METRICS_PORT); 0 serves none.
    #: HOOKRUN_NOTIFIER_HEALTH_PORT, when set, wins: one environment shared by the runner and
    #: the notifier (`make run`, the tests) gives each its own port.
    hookrun_metrics_port: int = Field(
        default=0,
        validation_alias=AliasChoices("hookrun_notifier_health_port", "hookrun_metrics_port"),
    )
    #: Address that port listens on (0.0.0.0 for a Prometheus elsewhere).
    hookrun_metrics_host: str = "127.0.0.1"
    #: Fernet key(s) that unseal the secrets of subscriptions made through the admin API (the
    #: status service's HOOKRUN_SECRETS_KEY); unset: only unsealed secrets can be used.
    hookrun_secrets_key: SecretsKey | None = None

    @field_validator("hookrun_notifier_retry_schedule_s", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            value = value.strip()
            if not value:
                return None
            delays = tuple(float(part) for part in value.split(","))
            if any(d < 0 for d in delays):
                raise ValueError("delays must be >= 0")
            return delays
        return value
