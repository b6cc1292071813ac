"""Shared helpers of the notifier integration tests: processes, receivers, events."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import jsonschema

from hookrun.dev.events import RawEvent, read_events
from hookrun.dev.kafka_net import free_port
from hookrun.dev.procs import ServiceProcess
from hookrun.dev.receiver import Received
from hookrun.events import topics
from hookrun.events.kafka import Publisher
from hookrun.events.notification_schema import RUN_NOTIFICATION_SCHEMA

WHSEC = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
WHSEC_OLD = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"

HEADER = """
project: {id: p-1, slug: demo, name: Demo}
organization: {id: o-1, slug: acme, title: Acme}
environment: {id: e-1, slug: dev, type: DEVELOPMENT}
steps:
  - {name: extract, command: ["true"]}
"""


def trigger(trigger_id: str, *urls: str, secrets: str = f'"{WHSEC}"') -> str:
    subs = "".join(f'      - {{url: "{u}", secret: {secrets}}}\n' for u in urls)
    return (
        f"  - id: {trigger_id}\n    title: {trigger_id}\n"
        "    actions: [{action: run_execution, step: extract}]\n"
        f"    notifications:\n{subs}"
    )


def start_notifier(
    tmp_path: Path, bootstrap: str, ns: str, config: str, name: str = "notifier", **env: str
) -> ServiceProcess:
    path = tmp_path / f"{name}.yaml"
    path.write_text(config)
    port = free_port()
    proc = ServiceProcess(
        name,
        "hookrun.notifier",
        {
            "HOOKRUN_CONFIG": str(path),
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "HOOKRUN_NAMESPACE": ns,
            "HOOKRUN_NOTIFIER_HEALTH_PORT": str(port),
            **env,
        },
        tmp_path,
        health_url=f"http://127.0.0.1:{port}/healthz",
    )
    return proc.start(wait_s=60)


def start_status(
    tmp_path: Path, bootstrap: str, ns: str, config: str, token: str, **env: str
) -> tuple[ServiceProcess, str]:
    """The status service (SQLite in ``tmp_path``) on the same config; returns it and its URL."""
    path = tmp_path / "status.yaml"
    path.write_text(config)
    port = free_port()
    proc = ServiceProcess(
        "status",
        "hookrun.status",
        {
            "HOOKRUN_CONFIG": str(path),
            "HOOKRUN_STATUS_PORT": str(port),
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "HOOKRUN_NAMESPACE": ns,
            "HOOKRUN_DATABASE_URL": f"sqlite:///{tmp_path / 'status.db'}",
            "HOOKRUN_ADMIN_TOKEN": token,
            **env,
        },
        tmp_path,
        health_url=f"http://127.0.0.1:{port}/healthz",
    )
    return proc.start(wait_s=60), f"http://127.0.0.1:{port}"


async def publish(bootstrap: str, ns: str, events: list) -> None:
    publisher = Publisher(bootstrap, "test", namespace=ns)
    await publisher.start(wait=True)
    try:
        await publisher.publish(events)
    finally:
        await publisher.stop()


async def events_of(
    bootstrap: str,
    ns: str,
    run_id: str,
    until: Callable[[list[RawEvent]], bool] | None = None,
    timeout_s: float = 20,
) -> list[RawEvent]:
    return await read_events(
        bootstrap, topics.named(topics.RUNS, ns), key=run_id, until=until, timeout_s=timeout_s
    )


def of_type(events: list[RawEvent], type_: str) -> list[dict]:
    return [e.data() for e in events if e.headers["ce_type"] == type_]


def wait_for(predicate: Callable[[], bool], timeout_s: float = 20, what: str = "") -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or predicate}")
        time.sleep(0.05)


def check_body(request: Received) -> dict:
    """Every delivered body: signature verified by standardwebhooks, valid against the schema."""
    assert request.verified, request.headers
    body = request.json()
    jsonschema.validate(body, RUN_NOTIFICATION_SCHEMA, format_checker=jsonschema.FormatChecker())
    return body
