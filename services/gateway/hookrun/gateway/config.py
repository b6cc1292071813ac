"""Gateway settings, read from the environment (the only place that reads them is app.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field, PositiveFloat, PositiveInt, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from hookrun.events import limits, topics
from hookrun.events.logs import LogFormat
from hookrun.gateway import sampling


class Settings(BaseSettings):
    """Environment of the gateway; defaults suit `make run` and `docker compose up`."""

    model_config = SettingsConfigDict(extra="ignore")

    hookrun_config: Path = Path("examples/hookrun.yaml")
    hookrun_host: str = "127.0.0.1"
    hookrun_port: PositiveInt = 8000
    #: Largest launch body accepted; larger ones get 413 before the body is read.
    hookrun_max_body_bytes: PositiveInt = 1024 * 1024
    #: Deepest JSON body accepted; a deeper one is rejected (400) before anything is appended.
    hookrun_max_json_depth: Annotated[int, Field(ge=1, le=limits.MAX_JSON_DEPTH_CEILING)] = (
        limits.MAX_JSON_DEPTH
    )
    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    #: First segment of every topic name, so several systems (or test modules) share a broker.
    hookrun_namespace: str = topics.NAMESPACE
    #: How long a launch waits for Kafka's acknowledgement before answering 503.
    hookrun_kafka_timeout_s: PositiveFloat = 5.0
    #: How long the producer waits to fill a batch: higher batches more launches per request.
    hookrun_kafka_linger_ms: int = 0
    #: Seconds a sender is told to wait (Retry-After) when Kafka is unavailable.
    hookrun_retry_after_s: PositiveInt = 5
    hookrun_dedupe_window_s: PositiveInt = topics.DEDUPE_WINDOW_S
    #: Refused launches (rejected, duplicate, filtered, rate-limited) of one source logged one
    #: by one per window; past it they are counted, and one entry per window carries the count
    #: (``sampling``).
    hookrun_rejection_log_limit: PositiveInt = sampling.DEFAULT_LIMIT
    hookrun_rejection_log_window_s: PositiveFloat = sampling.DEFAULT_WINDOW_S
    #: Where run info and the admin API are answered; the gateway forwards those paths there.
    hookrun_status_url: str = "http://127.0.0.1:8001"
    hookrun_access_log: bool = False
    #: A client must send a request's headers within this many seconds of connecting (or of the
    #: request's first byte) and its body within the next; else 408 and the connection is closed.
    hookrun_header_timeout_s: PositiveFloat = 10.0
    hookrun_body_timeout_s: PositiveFloat = 30.0
    #: Connections open at once; one more is answered 503 as soon as its headers are in.
    hookrun_max_connections: PositiveInt = 1024
    #: How long an idle connection stays open for a next request.
    hookrun_keep_alive_s: PositiveInt = 5
    log_level: str = "INFO"
    #: text (the default) or json: one JSON object per line (hookrun.events.logs).
    log_format: LogFormat = "text"

    @model_validator(mode="after")
    def _body_fits_in_a_kafka_message(self) -> Settings:
        # The body travels base64-encoded inside TriggerLaunched; keep 256 KiB for the rest.
        largest = self.hookrun_max_body_bytes * 4 // 3 + 256 * 1024
        if largest > topics.MAX_MESSAGE_BYTES:
            limit = (topics.MAX_MESSAGE_BYTES - 256 * 1024) * 3 // 4
            raise ValueError(
                f"HOOKRUN_MAX_BODY_BYTES={self.hookrun_max_body_bytes} does not fit in a Kafka "
                f"message of {topics.MAX_MESSAGE_BYTES} bytes; the largest allowed is {limit}"
            )
        return self
