"""The trigger log against a real broker: the topic's retention."""

import asyncio

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from hookrun.dev.pytest_kafka import new_namespace
from hookrun.events import topics
from hookrun.events.admin import set_topic_configs
from hookrun.events.kafka import ensure_topics
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
    # An operator's own setting on the topic survives the change.
    assert await set_topic_configs(kafka_bootstrap, topic, {"segment.ms": "7200000"})
    await until_configured(kafka_bootstrap, topic, "segment.ms", "7200000")

    assert await set_topic_retention(kafka_bootstrap, namespace, 5 * 86400)
    configs = await until_configured(kafka_bootstrap, topic, "retention.ms", "432000000")
    assert configs["segment.ms"] == "7200000"
    assert not await set_topic_retention(kafka_bootstrap, namespace, 5 * 86400)
