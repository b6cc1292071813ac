"""Runner settings, read from the environment (the only place that reads them is app.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, NonNegativeInt, PositiveFloat, PositiveInt
from pydantic_settings import BaseSettings, SettingsConfigDict

from hookrun.events import limits, topics
from hookrun.events.logs import LogFormat


class Settings(BaseSettings):
    """Environment of the runner; defaults suit `make run` and `docker compose up`."""

    model_config = SettingsConfigDict(extra="ignore")

    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    hookrun_config: Path = Path("examples/hookrun.yaml")
    #: First segment of every topic name, so several systems (or test modules) share a broker.
    hookrun_namespace: str = topics.NAMESPACE
    #: Working directories of executions live under <data_dir>/executions/<execution id>/.
    hookrun_data_dir: Path = Path(".hookrun/data")
    #: Executions this runner process runs at once; more wait in a queue.
    hookrun_runner_concurrency: PositiveInt = 8
    #: Executions waiting for a slot beyond which the runner takes no more launches from Kafka
    #: (they wait there, not in memory); 0 means 4 x concurrency.
    hookrun_runner_max_backlog: NonNegativeInt = 0
    #: How long an execution's lease lasts without a heartbeat before another runner takes over.
    hookrun_runner_lease_s: PositiveFloat = 30.0
    #: Consumer session timeout: how soon a dead runner's partitions move to another instance.
    hookrun_runner_session_timeout_ms: PositiveInt = 10_000
    #: Largest output.json an execution may write; a larger one fails the execution. At most
    #: half a Kafka message: RunFinished carries the outputs of the run's executions.
    hookrun_max_output_bytes: Annotated[int, Field(ge=1, le=topics.MAX_MESSAGE_BYTES // 2)] = (
        limits.MAX_OUTPUT_BYTES
    )
    #: Deepest nesting of an execution's output.json; a deeper one fails the execution.
    hookrun_max_json_depth: Annotated[int, Field(ge=1, le=limits.MAX_JSON_DEPTH_CEILING)] = (
        limits.MAX_JSON_DEPTH
    )
    #: Who executions run as: a user name or a numeric uid; empty: the runner's own user.
    #: Unset: `nobody` when the runner runs as root. Set while the runner is not root, the
    #: runner refuses to start.
    hookrun_execution_user: str | None = None
    #: auto: a bubblewrap sandbox when `bwrap` is on PATH and its start-up probe works, else
    #: none (with a WARNING); bwrap: required (the runner refuses to start without it); none.
    hookrun_execution_sandbox: Literal["auto", "bwrap", "none"] = "auto"
    #: How often the owner of a schedule looks for due times (HOOKRUN_SCHEDULE_TICK_S).
    hookrun_schedule_tick_s: PositiveFloat = 1.0
    #: Port of GET /metrics, /healthz and /readyz (HOOKRUN_METRICS_PORT); 0 serves none.
    #: HOOKRUN_RUNNER_HEALTH_PORT, when set, wins: one environment shared by the runner and
    #: the notifier (`make run`, the tests) gives each its own port.
    hookrun_metrics_port: int = Field(
        default=0,
        validation_alias=AliasChoices("hookrun_runner_health_port", "hookrun_metrics_port"),
    )
    #: Address that port listens on (0.0.0.0 for a Prometheus elsewhere).
    hookrun_metrics_host: str = "127.0.0.1"
    log_level: str = "INFO"
    #: text (the default) or json: one JSON object per line (hookrun.events.logs).
    log_format: LogFormat = "text"

    @property
    def group_id(self) -> str:
        """Consumer group: `runner`, or `<namespace>.runner` so namespaces never share a group."""
        if self.hookrun_namespace == topics.NAMESPACE:
            return "runner"
        return f"{self.hookrun_namespace}.runner"

    @property
    def schedules_group_id(self) -> str:
        """Group of the runners that fire schedules: `<group_id>-schedules`."""
        return f"{self.group_id}-schedules"
