"""The trigger log against a real broker: a flood of rejections, the topic's retention."""

import asyncio
import time
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from hookrun.dev.events import read_events
from hookrun.dev.kafka_net import free_port
from hookrun.dev.procs import ServiceProcess
from hookrun.dev.pytest_kafka import new_namespace
from hookrun.events import TriggerLogged, topics
from hookrun.events.admin import set_topic_configs
from hookrun.events.kafka import Publisher, ensure_topics
from hookrun.status.retention import set_topic_retention

pytestmark = pytest.mark.kafka


async def topic_configs(bootstrap: str, topic: str) -> dict[str, str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        [described] = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic)]
        )
        [(_, _, _, _, entries)] = described.resources
        return {e[0]: e[1] for e in entries}
    finally:
        await admin.close()


async def until_configured(bootstrap: str, topic: str, name: str, value: str) -> dict[str, str]:
    """The topic's configs once ``name`` has ``value``: a change is applied asynchronously."""
    for _ in range(100):
        configs = await topic_configs(bootstrap, topic)
        if configs[name] == value:
            return configs
        await asyncio.sleep(0.1)
    raise AssertionError(f"{topic}: {name} is {configs[name]}, not {value}")


async def test_the_status_service_gives_the_trigger_topic_its_retention_and_keeps_the_rest(
    kafka_bootstrap,
):
    namespace = new_namespace()
    await ensure_topics(kafka_bootstrap, namespace=namespace)
    topic = topics.named(topics.TRIGGERS, namespace)
    created = await topic_configs(kafka_bootstrap, topic)
    assert created["retention.ms"] == str(30 * 86400 * 1000)
    # An operator's own setting on the topic survives the change.
    assert await set_topic_configs(kafka_bootstrap, topic, {"segment.ms": "7200000"})
    await until_configured(kafka_bootstrap, topic, "segment.ms", "7200000")

    assert await set_topic_retention(kafka_bootstrap, namespace, 5 * 86400)
    configs = await until_configured(kafka_bootstrap, topic, "retention.ms", "432000000")
    assert configs["segment.ms"] == "7200000"
    assert not await set_topic_retention(kafka_bootstrap, namespace, 5 * 86400)


CONFIG = """
project: {id: p-1, slug: demo, name: Demo}
organization: {id: o-1, slug: acme, title: Acme}
environment: {id: e-1, slug: dev, type: DEVELOPMENT}
steps:
  - {name: noop, command: ["true"]}
triggers:
  - id: gh
    title: GitHub
    conditions: [{preset: github, secret: gh-secret}]
    actions: [{action: run_execution, step: noop}]
"""


async def test_a_flood_of_rejections_leaves_a_bounded_count_of_records_on_the_topic(
    kafka_bootstrap, tmp_path
):
    namespace = new_namespace()
    await ensure_topics(kafka_bootstrap, namespace=namespace)
    config = tmp_path / "hookrun.yaml"
    config.write_text(CONFIG)
    port = free_port()
    gateway = ServiceProcess(
        f"gateway-{port}",
        "hookrun.gateway",
        {
            "HOOKRUN_CONFIG": str(config),
            "HOOKRUN_PORT": str(port),
            "HOOKRUN_NAMESPACE": namespace,
            "HOOKRUN_REJECTION_LOG_LIMIT": "5",
            "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        },
        tmp_path,
        health_url=f"http://127.0.0.1:{port}/healthz",
    )
    gateway.start(wait_s=60)
    marker = uuid.uuid4().hex.encode()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            for _ in range(300):
                r = await client.post(
                    "/api/v0/launch/gh/",
                    content=marker,
                    headers={"X-Hub-Signature-256": "sha256=" + "0" * 64},
                )
                assert r.status_code == 400
    finally:
        # The window in progress is summed up when the gateway stops.
        gateway.stop()
    found = await read_events(
        kafka_bootstrap,
        topics.named(topics.TRIGGERS, namespace),
        until=lambda f: sum(e.data().get("count", 1) for e in f) >= 300,
    )
    entries = [e.data() for e in found]
    assert sum(e.get("count", 1) for e in entries) == 300
    assert len(entries) == 6
    assert entries[-1]["count"] == 295
    assert all(e["content_length"] == len(marker) for e in entries)


async def test_the_status_service_deletes_rejections_past_the_retention_and_sets_the_topics(
    kafka_bootstrap, tmp_path
):
    namespace = new_namespace()
    await ensure_topics(kafka_bootstrap, namespace=namespace)
    now = datetime.now(UTC)
    publisher = Publisher(kafka_bootstrap, "test", namespace=namespace)
    await publisher.start(wait=True)
    try:
        await publisher.publish(
            [
                TriggerLogged(
                    trigger_id="gh",
                    outcome="rejected",
                    reason=reason,
                    status_code=400,
                    method="POST",
                    occurred_at=now - age,
                )
                for reason, age in (("old", timedelta(days=11)), ("recent", timedelta(days=1)))
            ]
        )
    finally:
        await publisher.stop()
    config = tmp_path / "hookrun.yaml"
    config.write_text(CONFIG)
    port = free_port()
    status = ServiceProcess(
        f"status-{port}",
        "hookrun.status",
        {
            "HOOKRUN_CONFIG": str(config),
            "HOOKRUN_STATUS_PORT": str(port),
            "HOOKRUN_NAMESPACE": namespace,
            "HOOKRUN_DATABASE_URL": f"sqlite:///{tmp_path / 'status.db'}",
            "HOOKRUN_ADMIN_TOKEN": "t",
            "HOOKRUN_TRIGGER_LOG_RETENTION_S": str(10 * 86400),
            "HOOKRUN_TRIGGER_LOG_PRUNE_INTERVAL_S": "0.2",
            "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        },
        tmp_path,
        health_url=f"http://127.0.0.1:{port}/healthz",
    )
    status.start(wait_s=60)
    try:
        reasons: list[str] = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            log = httpx.get(
                f"http://127.0.0.1:{port}/api/v1/triggers/gh/log",
                headers={"Authorization": "Bearer t"},
            )
            reasons = [e["reason"] for e in log.json()["entries"]]
            if reasons == ["recent"]:
                break
            await asyncio.sleep(0.2)
        assert reasons == ["recent"]
        topic = topics.named(topics.TRIGGERS, namespace)
        await until_configured(kafka_bootstrap, topic, "retention.ms", str(10 * 86400 * 1000))
    finally:
        status.stop()
