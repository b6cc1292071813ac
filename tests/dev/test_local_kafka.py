"""The local Kafka broker really stores and serves messages, and survives a restart."""

import asyncio
import logging
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError

from hookrun.dev.kafka import LocalKafka
from hookrun.dev.pytest_kafka import NewTopic, delete_namespaces, new_namespace
from hookrun.events import topics
from hookrun.events.kafka import delete_topics, ensure_topics, topic_names
from hookrun.events.topics import TopicSpec


async def produce(bootstrap: str, topic: str, key: bytes, value: bytes) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(topic, value, key=key)
    finally:
        await producer.stop()


async def read_all(bootstrap: str, topic: str, expected: int) -> list[tuple[bytes, bytes]]:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    got: list[tuple[bytes, bytes]] = []
    try:
        async with asyncio.timeout(30):
            while len(got) < expected:
                batch = await consumer.getmany(timeout_ms=500)
                for records in batch.values():
                    got.extend((r.key, r.value) for r in records)
    finally:
        await consumer.stop()
    return got


async def test_a_message_produced_with_acks_all_is_consumed_back(
    kafka_bootstrap: str, new_topic: NewTopic
) -> None:
    topic = await new_topic(partitions=3)
    key, value = str(uuid.uuid4()).encode(), b'{"hello": "kafka"}'

    await produce(kafka_bootstrap, topic, key, value)

    assert await read_all(kafka_bootstrap, topic, expected=1) == [(key, value)]


async def test_new_topic_applies_partitions_and_configs(
    kafka_bootstrap: str, new_topic: NewTopic
) -> None:
    # a topic that accepts bigger messages than the 1 MiB client default
    topic = await new_topic(partitions=2, configs={"max.message.bytes": "4194304"})
    big = b"x" * (2 * 1024 * 1024)
    producer = AIOKafkaProducer(
        bootstrap_servers=kafka_bootstrap, acks="all", max_request_size=4 * 1024 * 1024
    )
    await producer.start()
    try:
        meta = await producer.send_and_wait(topic, big, key=b"k")
        assert producer.client.cluster.partitions_for_topic(topic) == {0, 1}
    finally:
        await producer.stop()
    assert meta.offset == 0


async def test_create_topics_is_idempotent(kafka_bootstrap: str) -> None:
    name = f"test-{uuid.uuid4()}"
    assert await ensure_topics(kafka_bootstrap, [TopicSpec(name, partitions=1)]) == [name]
    try:
        assert await ensure_topics(kafka_bootstrap, [TopicSpec(name, 1)]) == []
    finally:
        await delete_topics(kafka_bootstrap, [name])


async def test_a_test_namespace_is_deleted_with_every_topic_in_it_and_no_other(
    kafka_bootstrap: str,
) -> None:
    ns, other = new_namespace(), new_namespace()
    await ensure_topics(kafka_bootstrap, namespace=ns)
    # a topic a service under test made in the namespace, and one of another namespace
    await ensure_topics(kafka_bootstrap, [TopicSpec(f"{ns}.made-by-a-service", 1)])
    await ensure_topics(kafka_bootstrap, [TopicSpec(f"{other}.runs", 1)])
    mine = {name for name in await topic_names(kafka_bootstrap) if name.startswith(f"{ns}.")}
    assert f"{ns}.runs" in mine and f"{ns}.made-by-a-service" in mine

    assert await delete_namespaces(kafka_bootstrap, [ns]) == len(mine)
    async with asyncio.timeout(30):
        while (names := await topic_names(kafka_bootstrap)) & mine:
            await asyncio.sleep(0.2)
    assert f"{other}.runs" in names
    await delete_namespaces(kafka_bootstrap, [other])


async def test_a_stopped_broker_refuses_producers_and_keeps_its_data_after_a_restart(
    spare_kafka: LocalKafka,
) -> None:
    bootstrap = spare_kafka.bootstrap
    topic = f"test-{uuid.uuid4()}"
    await ensure_topics(bootstrap, [TopicSpec(topic, partitions=1)])
    await produce(bootstrap, topic, b"before", b"restart")

    # stopped: nothing listens, so a producer fails fast instead of hanging
    assert spare_kafka.stop()
    assert not spare_kafka.is_running()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, request_timeout_ms=3000)
    with pytest.raises((KafkaConnectionError, KafkaTimeoutError)):
        async with asyncio.timeout(15):
            await producer.start()
    await producer.stop()

    # started again on the same data dir and port: the earlier message is still there
    spare_kafka.start()
    await produce(bootstrap, topic, b"after", b"restart")
    got = await read_all(bootstrap, topic, expected=2)
    assert got == [(b"before", b"restart"), (b"after", b"restart")]


async def test_a_killed_broker_recovers_its_data(spare_kafka: LocalKafka) -> None:
    bootstrap = spare_kafka.bootstrap
    topic = f"test-{uuid.uuid4()}"
    await ensure_topics(bootstrap, [TopicSpec(topic, partitions=1)])
    await produce(bootstrap, topic, b"acked", b"before the crash")

    # a crash: SIGKILL, no clean shutdown; acks=all data must survive it
    assert spare_kafka.kill()
    spare_kafka.start()

    assert await read_all(bootstrap, topic, expected=1) == [(b"acked", b"before the crash")]


async def test_make_run_readies_a_new_broker_for_consumer_groups(
    spare_kafka: LocalKafka, caplog: pytest.LogCaptureFixture
) -> None:
    """The first consumer group on a new broker met COORDINATOR_NOT_AVAILABLE, then
    NOT_COORDINATOR, while __consumer_offsets was made and loaded; make run's terminal showed
    each refusal as an ERROR or a warning."""
    from hookrun.dev.run import prepare_broker

    namespace = new_namespace("coord")
    await prepare_broker(spare_kafka.bootstrap, namespace)
    caplog.set_level(logging.INFO, logger="aiokafka")
    consumer = AIOKafkaConsumer(
        topics.named(topics.RUNS, namespace),
        bootstrap_servers=spare_kafka.bootstrap,
        group_id="runner",
    )
    await consumer.start()
    try:
        async with asyncio.timeout(30):
            while not consumer.assignment():
                await consumer.getmany(timeout_ms=200)
    finally:
        await consumer.stop()
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
