"""A run is performed with the config version it was launched with, whatever config the runner
that takes it loaded (real runner and gateway processes, real broker)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import httpx
import pytest

from hookrun.dev.events import read_events
from hookrun.dev.kafka_net import free_port
from hookrun.dev.procs import ServiceProcess
from hookrun.events import decode, topics
from hookrun.events.configs import ConfigRecorded
from tests.integration.test_runner_kafka import FINISHED, Harness, one

pytestmark = pytest.mark.kafka

HEAD = """
project: {id: p-1, slug: demo, name: Demo}
organization: {id: o-1, slug: acme, title: Acme}
environment: {id: e-1, slug: dev, type: DEVELOPMENT}
"""
# The same trigger and step names, another command: what a config change looks like.
V1 = (
    HEAD
    + """
steps:
  - name: say
    command: ["python3", "{config_dir}/step.py", "ok", "v1"]
    env: {TOKEN: "${env:HOOKRUN_TEST_TOKEN:-unset}"}
triggers:
  - id: say
    title: say
    conditions: [{type: static_secret, header: X-Token, secret: "${env:HOOKRUN_TEST_CONDITION}"}]
    actions: [{action: run_execution, step: say}]
    response: {json: {run_id: "{run_id}"}}
"""
)
V2 = (
    HEAD
    + """
steps:
  - name: say
    command: ["python3", "{config_dir}/step.py", "ok", "v2"]
    env: {TOKEN: "${env:HOOKRUN_TEST_TOKEN:-unset}"}
triggers:
  - id: say
    title: say
    conditions: [{type: static_secret, header: X-Token, secret: "${env:HOOKRUN_TEST_CONDITION}"}]
    actions: [{action: run_execution, step: say}]
    response: {json: {run_id: "{run_id}"}}
"""
)
CONDITION = "condition-secret-value"
UNKNOWN = "0123456789ab"


def version_of(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def output_of(finished: Any) -> Any:
    (output,) = finished.output.values()
    return output


async def launch(harness: Harness, version: str) -> str:
    """Append a launch of `say` naming ``version``, as a gateway that loaded it would."""
    event = harness.launched("say", {}, config_version=version)
    await harness.publisher.publish([event])
    return event.run_id


async def recorded(harness: Harness) -> dict[str, ConfigRecorded]:
    raw = await read_events(
        harness.bootstrap, topics.named(topics.CONFIGS, harness.ns), timeout_s=0
    )
    events = [decode(r.value, [(k, v.encode()) for k, v in r.headers.items()]) for r in raw]
    return {e.config_version: e for e in events if isinstance(e, ConfigRecorded)}


@pytest.fixture(scope="module")
async def restarted(kafka_bootstrap, tmp_path_factory):
    """A run launched under v1 while no runner is up; the runner comes back with v2."""
    h = await Harness(kafka_bootstrap, tmp_path_factory.mktemp("versions")).start()
    h.config.write_text(V1)
    env = {"HOOKRUN_TEST_CONDITION": CONDITION}
    first = h.runner(**env, HOOKRUN_TEST_TOKEN="token-of-the-first")
    records = await recorded(h)
    first.stop()
    launched_v1 = await launch(h, version_of(V1))
    h.config.write_text(V2)
    h.runner(**env, HOOKRUN_TEST_TOKEN="token-of-the-second")
    runs = {
        "v1": launched_v1,
        "v2": await launch(h, version_of(V2)),
        "unknown": await launch(h, UNKNOWN),
    }
    found = await h.finished(list(runs.values()))
    yield h, records, {name: one(found[rid], FINISHED) for name, rid in runs.items()}
    await h.stop()


async def test_a_runner_records_its_config_as_written(restarted) -> None:
    _, records, _ = restarted
    record = records[version_of(V1)]
    assert record.text == V1
    assert "${env:HOOKRUN_TEST_CONDITION}" in record.text
    assert CONDITION not in record.text


async def test_a_run_launched_under_v1_runs_v1s_step_on_a_runner_restarted_with_v2(
    restarted,
) -> None:
    _, _, finished = restarted
    v1 = finished["v1"]
    assert v1.status == "SUCCESS", v1.error
    assert v1.config_version == version_of(V1)
    assert output_of(v1)["argv"] == ["v1"]
    # the step's `${env:}` is resolved at use, by the runner that performs it
    assert output_of(v1)["secret"] == "token-of-the-second"
    v2 = finished["v2"]
    assert v2.config_version == version_of(V2) and output_of(v2)["argv"] == ["v2"]


async def test_a_run_of_a_version_never_recorded_fails_with_a_clear_error(restarted) -> None:
    _, _, finished = restarted
    unknown = finished["unknown"]
    assert unknown.status == "FAILURE"
    assert unknown.error.name == "UnknownConfigVersion"
    assert UNKNOWN in unknown.error.message
    assert unknown.config_version == UNKNOWN and unknown.executions == []


async def test_a_gateway_on_v1_records_it_and_the_v2_runner_performs_its_launch(
    restarted, tmp_path: Path
) -> None:
    h, _, _ = restarted
    config = tmp_path / "hookrun.yaml"
    config.write_text(V1)
    port = free_port()
    gateway = ServiceProcess(
        f"gateway-{port}",
        "hookrun.gateway",
        {
            "HOOKRUN_CONFIG": str(config),
            "HOOKRUN_PORT": str(port),
            "HOOKRUN_NAMESPACE": h.ns,
            "KAFKA_BOOTSTRAP_SERVERS": h.bootstrap,
            "HOOKRUN_TEST_CONDITION": CONDITION,
        },
        tmp_path,
        health_url=f"http://127.0.0.1:{port}/healthz",
    )
    gateway.start(wait_s=60)
    try:
        response = httpx.post(
            f"http://127.0.0.1:{port}/api/v0/launch/say/",
            json={},
            headers={"X-Token": CONDITION},
            timeout=30,
        )
        assert response.status_code == 202, response.text
        run_id = response.json()["run_id"]
        finished = one((await h.finished([run_id]))[run_id], FINISHED)
    finally:
        gateway.stop()
    assert finished.status == "SUCCESS", finished.error
    assert finished.config_version == version_of(V1)
    assert output_of(finished)["argv"] == ["v1"]
