"""Create Kafka topics idempotently and wait until every partition has a leader."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError, for_code


@dataclass(frozen=True)
class TopicSpec:
    """A topic to create: name, partition count, replication factor and topic-level configs."""

    name: str
    partitions: int = 3
    replication_factor: int = 1
    configs: Mapping[str, str] = field(default_factory=dict)


async def create_topics(
    bootstrap: str,
    specs: Iterable[TopicSpec | str],
    *,
    timeout_s: float = 30.0,
) -> list[str]:
    """Create the topics that do not exist yet and wait until all of them can be used.

    A plain string stands for ``TopicSpec(name)``. Existing topics are left as they are (their
    partitions and configs are not changed). Returns the names that were newly created.
    Raises aiokafka's KafkaError for any other error, and TimeoutError if the partitions have no
    leader after ``timeout_s`` seconds.
    """
    wanted = [TopicSpec(spec) if isinstance(spec, str) else spec for spec in specs]
    if not wanted:
        return []
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap, request_timeout_ms=int(timeout_s * 1000)
    )
    await admin.start()
    try:
        response = await admin.create_topics(
            [
                NewTopic(
                    name=spec.name,
                    num_partitions=spec.partitions,
                    replication_factor=spec.replication_factor,
                    topic_configs=dict(spec.configs),
                )
                for spec in wanted
            ],
            timeout_ms=int(timeout_s * 1000),
        )
        created = []
        # CreateTopics reports errors per topic in the response instead of raising.
        for topic, code, *rest in response.topic_errors:
            if code == 0:
                created.append(topic)
                continue
            error = for_code(code)
            if error is TopicAlreadyExistsError:
                continue
            message = rest[0] if rest and rest[0] else error.description
            raise error(f"creating topic {topic!r}: {message}")
        await _wait_for_leaders(admin, [spec.name for spec in wanted], timeout_s)
        return created
    finally:
        await admin.close()


async def delete_topics(bootstrap: str, names: Iterable[str], *, timeout_s: float = 30.0) -> None:
    """Delete topics, ignoring those that do not exist."""
    topics = list(names)
    if not topics:
        return
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap, request_timeout_ms=int(timeout_s * 1000)
    )
    await admin.start()
    try:
        await admin.delete_topics(topics, timeout_ms=int(timeout_s * 1000))
    finally:
        await admin.close()


async def _wait_for_leaders(
    admin: AIOKafkaAdminClient, topics: list[str], timeout_s: float
) -> None:
    # CreateTopics returns once the controller recorded the topic; the broker may take a moment
    # to load the partitions. Producing right away would then fail with
    # UNKNOWN_TOPIC_OR_PARTITION or NOT_LEADER, so wait until metadata lists a leader for each.
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        try:
            described = await admin.describe_topics(topics)
        except KafkaError:
            described = []
        ready = {
            topic["topic"]
            for topic in described
            if topic["error_code"] == 0
            and topic["partitions"]
            and all(p["leader"] >= 0 for p in topic["partitions"])
        }
        if ready >= set(topics):
            return
        if loop.time() >= deadline:
            missing = sorted(set(topics) - ready)
            raise TimeoutError(f"topics without a partition leader after {timeout_s} s: {missing}")
        await asyncio.sleep(0.05)
