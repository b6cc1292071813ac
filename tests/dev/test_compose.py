"""docker-compose.yml and the services agree: every variable it sets is one the service reads,
and every port it uses (published, probed, scraped, forwarded to) is the one the service serves."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from pydantic.fields import FieldInfo

from hookrun.events import tracing
from hookrun.events.security import ENV, PASSWORD_FILE
from hookrun.gateway.config import Settings as GatewaySettings
from hookrun.notifier.config import Settings as NotifierSettings
from hookrun.runner.config import Settings as RunnerSettings
from hookrun.status.config import Settings as StatusSettings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = {
    "gateway": GatewaySettings,
    "status": StatusSettings,
    "runner": RunnerSettings,
    "notifier": NotifierSettings,
}
#: Read by every service outside its Settings: Kafka security and the topic layout.
SHARED = {
    *ENV.values(),
    PASSWORD_FILE,
    "HOOKRUN_TOPIC_REPLICATION_FACTOR",
    "HOOKRUN_TOPIC_PARTITIONS",
    tracing.ENDPOINT,
}


def _names(name: str, field: FieldInfo) -> set[str]:
    alias = field.validation_alias
    choices = getattr(alias, "choices", [alias] if isinstance(alias, str) else [name])
    return {str(choice).upper() for choice in choices}


def read_by(service: str, config: str | None = None) -> set[str]:
    """The variables ``service`` reads: its Settings, the shared ones, and the ${env:NAME} the
    config text (default: the example config, mounted into every service) refers to."""
    fields = SERVICES[service].model_fields
    if config is None:
        config = (ROOT / "examples/hookrun.yaml").read_text()
    return (
        {n for name, field in fields.items() for n in _names(name, field)}
        | SHARED
        | set(re.findall(r"\$\{env:([A-Z0-9_]+)", config))
    )


def env(service: str) -> dict[str, str]:
    return {k: str(v) for k, v in COMPOSE["services"][service]["environment"].items()}


def port_of(url: str) -> int:
    return int(re.search(r":(\d+)(/|$)", url).group(1))


@pytest.mark.parametrize("service", SERVICES)
def test_every_variable_compose_sets_is_one_the_service_reads(service):
    assert set(env(service)) - read_by(service) == set()


@pytest.mark.parametrize(
    ("service", "setting"),
    [
        ("gateway", "HOOKRUN_PORT"),
        ("status", "HOOKRUN_STATUS_PORT"),
        ("runner", "HOOKRUN_METRICS_PORT"),
        ("notifier", "HOOKRUN_METRICS_PORT"),
    ],
)
def test_readiness_is_probed_and_metrics_scraped_where_the_service_serves_them(service, setting):
    port = int(env(service)[setting])
    probe = " ".join(COMPOSE["services"][service]["healthcheck"]["test"])
    assert f"127.0.0.1:{port}/readyz" in probe
    scrape = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    targets = {
        job["job_name"]: target
        for job in scrape["scrape_configs"]
        for config in job["static_configs"]
        for target in config["targets"]
    }
    assert targets[service] == f"{service}:{port}"


def test_published_and_forwarded_ports_are_the_ones_served():
    gateway = env("gateway")
    assert COMPOSE["services"]["gateway"]["ports"] == [f"{gateway['HOOKRUN_PORT']}:8000"]
    assert gateway["HOOKRUN_PORT"] == "8000"
    assert gateway["HOOKRUN_STATUS_URL"] == f"http://status:{env('status')['HOOKRUN_STATUS_PORT']}"
    # Services listen on every interface inside their containers, not only on 127.0.0.1.
    assert gateway["HOOKRUN_HOST"] == env("status")["HOOKRUN_STATUS_HOST"] == "0.0.0.0"
    assert env("runner")["HOOKRUN_METRICS_HOST"] == env("notifier")["HOOKRUN_METRICS_HOST"]
    receiver = COMPOSE["services"]["receiver"]["environment"]["HOOKRUN_DEMO_RECEIVER_PORT"]
    assert env("notifier")["HOOKRUN_DEMO_RECEIVER_PORT"] == receiver


def test_the_postgres_profile_serves_the_url_the_compose_file_documents():
    postgres = COMPOSE["services"]["postgres"]
    assert postgres["profiles"] == ["postgres"]
    user, password, db = (
        postgres["environment"][k] for k in ("POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB")
    )
    documented = f"postgresql://{user}:{password}@postgres/{db}"
    assert documented in (ROOT / "docker-compose.yml").read_text()
    assert env("status")["HOOKRUN_DATABASE_URL"].startswith("${HOOKRUN_DATABASE_URL:-sqlite:")


def test_the_observability_profile_receives_the_traces_the_services_are_told_to_export():
    jaeger = COMPOSE["services"]["jaeger"]
    assert jaeger["profiles"] == ["observability"]
    documented = re.search(
        rf"{tracing.ENDPOINT}=(http://jaeger:\d+)", (ROOT / "docker-compose.yml").read_text()
    )
    assert documented is not None
    assert str(port_of(documented.group(1))) in jaeger["expose"]
    for service in SERVICES:
        # off unless the shell sets it: no export errors from a compose without the profile
        assert env(service)[tracing.ENDPOINT] == f"${{{tracing.ENDPOINT}:-}}"
