"""hookrun's Kafka clients: their settings, and the consumer calls the consume loop makes.

The settings are chosen on purpose rather than aiokafka's defaults, and every one carries the
security settings of the environment (:mod:`hookrun.events.security`). :class:`ConsumerClient` is
what :mod:`hookrun.events.consumer` needs of a consumer: :class:`GroupConsumer` (aiokafka) or
the in-memory one of :mod:`hookrun.events.memory`.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence
from typing import Any, NamedTuple, Protocol

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.cluster import ClusterMetadata
from aiokafka.protocol.metadata import MetadataRequest

from hookrun.events import topics
from hookrun.events.security import security_settings


def client_id(service: str) -> str:
    """Return ``<service>-<hostname>``, the client id every hookrun client uses."""
    return f"{service}-{socket.gethostname()}"


def producer_settings(
    bootstrap: str, service: str, *, request_timeout_ms: int = 10_000, linger_ms: int = 0
) -> dict[str, Any]:
    """Return the settings of a producer of ``service``.

    acks=all with idempotence: an acknowledged event survives a broker failover and a retried
    send is not duplicated. linger_ms=0: records that arrive while a produce request is in
    flight still leave together in the next one, and aiokafka's linger timer is coarse enough
    to add milliseconds to every send. Awaiting each send separately is fine because sends are
    concurrent.
    """
    return {
        "bootstrap_servers": bootstrap,
        "client_id": client_id(service),
        **security_settings(),
        "acks": "all",
        "enable_idempotence": True,
        "linger_ms": linger_ms,
        "max_batch_size": 1024 * 1024,
        "max_request_size": topics.MAX_MESSAGE_BYTES,
        "request_timeout_ms": request_timeout_ms,
        "retry_backoff_ms": 50,
    }


def consumer_settings(bootstrap: str, service: str, *, group: str | None) -> dict[str, Any]:
    """Return the settings of a consumer of ``service`` in ``group`` (None: no group).

    Offsets are committed by hand after the work is durable (no auto-commit), a new group starts
    from the beginning (``earliest``: a run launched before the consumer existed still runs), and
    ``fetch_max_wait_ms`` is short so an idle partition does not add half a second per hop.
    """
    return {
        "bootstrap_servers": bootstrap,
        "client_id": client_id(service),
        **security_settings(),
        "group_id": group,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "fetch_max_wait_ms": 20,
        "max_partition_fetch_bytes": topics.MAX_MESSAGE_BYTES,
        "fetch_max_bytes": 4 * topics.MAX_MESSAGE_BYTES,
        "isolation_level": "read_committed",
        "session_timeout_ms": 10_000,
        "heartbeat_interval_ms": 1_000,
    }


def admin_settings(bootstrap: str, *, request_timeout_ms: int = 30_000) -> dict[str, Any]:
    """Return the settings of an admin client (topics and their configs)."""
    return {
        "bootstrap_servers": bootstrap,
        "client_id": client_id("hookrun-admin"),
        **security_settings(),
        "request_timeout_ms": request_timeout_ms,
    }


class Commit(NamedTuple):
    """An offset to commit, and the metadata stored with it (e.g. where a replay must start)."""

    offset: int
    metadata: str = ""


class ConsumerClient(Protocol):
    """The consumer calls the loop makes: aiokafka's, plus :meth:`committed_offsets`."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def subscribe(self, topics: list[str], listener: Any) -> None: ...

    def assign(self, partitions: list[TopicPartition]) -> None: ...

    async def partitions_of_topics(self, topics: list[str]) -> list[TopicPartition]: ...

    def assignment(self) -> set[TopicPartition]: ...

    async def getmany(
        self, *partitions: TopicPartition, timeout_ms: int = 0, max_records: int | None = None
    ) -> dict[TopicPartition, list[Any]]: ...

    def seek(self, partition: TopicPartition, offset: int) -> None: ...

    async def position(self, partition: TopicPartition) -> int: ...

    async def beginning_offsets(
        self, partitions: list[TopicPartition]
    ) -> dict[TopicPartition, int]: ...

    async def end_offsets(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]: ...

    async def committed_offsets(
        self, partitions: list[TopicPartition]
    ) -> dict[TopicPartition, Commit]: ...

    async def commit(self, offsets: dict[TopicPartition, Commit]) -> None: ...

    def pause(self, *partitions: TopicPartition) -> None: ...

    def resume(self, *partitions: TopicPartition) -> None: ...

    def highwater(self, partition: TopicPartition) -> int | None: ...


class GroupConsumer(AIOKafkaConsumer):  # type: ignore[misc]  # aiokafka is untyped
    """aiokafka's consumer with :meth:`committed_offsets` and :meth:`partitions_of_topics`,
    which it has no public calls for."""

    async def partitions_of_topics(self, topics: list[str]) -> list[TopicPartition]:
        """Every partition of ``topics`` (none of a topic that does not exist), from the broker."""
        return await partitions_of_topics(self, topics)

    async def committed_offsets(
        self, partitions: list[TopicPartition]
    ) -> dict[TopicPartition, Commit]:
        """The group's committed offset and metadata of each partition that has one.

        One request for all of them (``committed()`` makes one per partition and drops the
        metadata).
        """
        found = await self._coordinator.fetch_committed_offsets(list(partitions))
        return {
            tp: Commit(om.offset, om.metadata or "") for tp, om in found.items() if om.offset >= 0
        }


async def partitions_of_topics(
    consumer: AIOKafkaConsumer, names: Sequence[str]
) -> list[TopicPartition]:
    """Every partition of the topics ``names`` (none of a topic that does not exist).

    ``consumer.partitions_for_topic`` only knows topics the consumer already tracks, so this
    asks the broker, for these topics only: the metadata of every topic in the cluster is slow
    to fetch on a broker holding thousands of topics. Never creates a topic (a broker with
    ``auto.create.topics.enable`` would, for a plain metadata request).
    """
    client = consumer._client  # no public call returns fresh partitions
    response = await client.send(client.get_random_node(), MetadataRequest(list(names), False))
    cluster = ClusterMetadata()
    cluster.update_metadata(response)
    return [
        TopicPartition(name, p)
        for name in names
        for p in sorted(cluster.partitions_for_topic(name) or ())
    ]
