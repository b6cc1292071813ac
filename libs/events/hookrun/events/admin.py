"""Topics on the broker: create the missing ones, list and delete them, and find partitions."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterable, Mapping

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import (
    ClusterAuthorizationFailedError,
    CoordinatorLoadInProgressError,
    GroupCoordinatorNotAvailableError,
    KafkaError,
    NotCoordinatorForGroupError,
    TopicAlreadyExistsError,
    TopicAuthorizationFailedError,
    for_code,
)
from aiokafka.protocol.commit import OffsetFetchRequest

from hookrun.events import topics
from hookrun.events.clients import admin_settings, partitions_of_topics
from hookrun.events.security import KafkaAccessDenied, check_access, exit_at_start

log = logging.getLogger(__name__)

# An ACL refusal: the credentials are good, and retrying will not change what they may do.
_NOT_AUTHORIZED = (TopicAuthorizationFailedError, ClusterAuthorizationFailedError)


@contextlib.asynccontextmanager
async def _admin(bootstrap: str, timeout_s: float) -> AsyncIterator[AIOKafkaAdminClient]:
    """A started admin client of ``bootstrap``, closed on leaving."""
    admin = AIOKafkaAdminClient(
        **admin_settings(bootstrap, request_timeout_ms=int(timeout_s * 1000))
    )
    await admin.start()
    try:
        yield admin
    finally:
        await admin.close()


async def ensure_topics(
    bootstrap: str,
    specs: Iterable[topics.TopicSpec] | None = None,
    *,
    namespace: str = topics.NAMESPACE,
    timeout_s: float = 30.0,
    layout: topics.Layout | None = None,
) -> list[str]:
    """Create the topics that are missing and wait until every partition of each has a leader.

    ``specs`` defaults to every topic hookrun needs in ``namespace``, laid out as ``layout``
    says (default: the environment's, :meth:`~hookrun.events.topics.Layout.from_env`); new topics
    get its replication factor, capped by the number of brokers. Existing topics are left as
    they are (:func:`unsafe_topics` reports how they differ). Returns the names newly created.
    Raises KafkaError for a refused creation and TimeoutError when partitions have no leader
    after ``timeout_s``.
    """
    async with _admin(bootstrap, timeout_s) as admin:
        laid = await _layout_on(admin, layout)
        wanted = list(specs if specs is not None else _wanted(namespace, laid))
        if not wanted:
            return []
        existing = set(await admin.list_topics())
        new = [
            NewTopic(
                s.name,
                num_partitions=s.partitions,
                replication_factor=laid.replication_factor,
                topic_configs=s.configs,
            )
            for s in wanted
            if s.name not in existing
        ]
        created = []
        if new:
            response = await admin.create_topics(new, timeout_ms=int(timeout_s * 1000))
            # CreateTopics reports errors per topic in the response instead of raising.
            for topic, code, *rest in response.topic_errors:
                error = for_code(code) if code else None
                if error is None:
                    created.append(topic)
                elif error is not TopicAlreadyExistsError:  # a concurrent creator won the race
                    raise error(
                        f"creating topic {topic!r}: {rest[0] if rest and rest[0] else error.description}"
                    )
        await _wait_for_leaders(admin, [s.name for s in wanted], timeout_s)
        return created


async def ensure_topics_forever(
    bootstrap: str, *, namespace: str = topics.NAMESPACE, max_delay_s: float = 5.0
) -> None:
    """Create hookrun's topics, retrying until Kafka answers (services start before the broker).

    Every service calls it at start, so it is where a service meets the brokers first: when they
    refuse its credentials or certificate (:func:`check_access`), or its user may not create the
    topics, it ends the process with one line and exit code 2
    (:func:`exit_at_start`) instead of retrying for ever.
    """
    delay = 0.2
    while True:
        try:
            await check_access(bootstrap)
            await ensure_topics(bootstrap, namespace=namespace)
            for problem in await unsafe_topics(bootstrap, namespace=namespace):
                log.warning("unsafe topic: %s", problem)
            return
        except KafkaAccessDenied as exc:
            exit_at_start(str(exc))
        except _NOT_AUTHORIZED as exc:
            exit_at_start(f"kafka: not authorized to create hookrun's topics: {exc}")
        except (KafkaError, OSError) as exc:
            log.warning("could not create topics yet (%r); retrying in %.1fs", exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, max_delay_s)


#: Kafka's topic of group offsets and state; a partition's leader coordinates its groups.
_OFFSETS_TOPIC = "__consumer_offsets"
#: What a broker answers while a group's coordinator is not ready (yet).
_COORDINATOR_NOT_READY = (
    GroupCoordinatorNotAvailableError,
    CoordinatorLoadInProgressError,
    NotCoordinatorForGroupError,
)


async def wait_for_group_coordination(bootstrap: str, timeout_s: float = 30.0) -> None:
    """Return once every partition of ``__consumer_offsets`` has a coordinator that loaded it.

    A new broker makes that topic on the first FindCoordinator request, then elects and loads
    each partition's coordinator; a consumer that joins its group meanwhile logs every refusal
    (COORDINATOR_NOT_AVAILABLE as an ERROR, NOT_COORDINATOR as "Marking the coordinator dead").
    One group per partition is described, so no group of any name meets a coordinator that is
    not ready. Raises TimeoutError after ``timeout_s`` and KafkaError for any other refusal.
    """
    async with _admin(bootstrap, timeout_s) as admin:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            try:
                if await _groups_coordinated(admin):
                    return
            except _COORDINATOR_NOT_READY:
                pass
            if loop.time() >= deadline:
                raise TimeoutError(f"group coordination not ready after {timeout_s} s")
            await asyncio.sleep(0.1)


async def _groups_coordinated(admin: AIOKafkaAdminClient) -> bool:
    await admin.find_coordinator("hookrun")  # makes __consumer_offsets on a new broker
    [offsets] = await admin.describe_topics([_OFFSETS_TOPIC])
    count = len(offsets["partitions"]) if offsets["error_code"] == 0 else 0
    if not count:
        return False
    for group in _group_per_partition(count):
        node = await admin.find_coordinator(group)
        # OffsetFetch of every offset of the group is what a joining consumer asks first. Sent
        # as is: list_consumer_group_offsets drops this answer's top-level error (v2+), and
        # describe_consumer_groups cannot decode Kafka 3.9's answer.
        answer = await admin._send_request(OffsetFetchRequest(group, None), node)
        if answer.error_code:
            raise for_code(answer.error_code)()
    return True


def _group_per_partition(count: int) -> list[str]:
    """A group id for each of ``count`` partitions of __consumer_offsets, by Kafka's rule:
    abs(Java String.hashCode(group id)) % count (abs as Kafka's Utils.abs: the sign bit off)."""
    found: dict[int, str] = {}
    n = 0
    while len(found) < count:
        name = f"hookrun-probe-{n}"
        h = 0
        for char in name:
            h = (31 * h + ord(char)) & 0xFFFFFFFF
        found.setdefault((h & 0x7FFFFFFF) % count, name)
        n += 1
    return list(found.values())


#: ``config_source`` of a config set on the topic itself (DescribeConfigs v1+).
_DYNAMIC_TOPIC_CONFIG = 1


async def set_topic_configs(
    bootstrap: str, topic: str, configs: Mapping[str, str], *, timeout_s: float = 30.0
) -> bool:
    """Give the existing ``topic`` these configs; return whether any of them changed.

    AlterConfigs replaces a topic's whole set of configs of its own (aiokafka has no incremental
    form), so the ones it has are read first and sent back beside the change: an operator's own
    settings stay, unless made so shortly before that the broker does not show them yet. Raises
    KafkaError when the broker refuses (an unknown topic too).
    """
    async with _admin(bootstrap, timeout_s) as admin:
        [described] = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic)]
        )
        [(code, message, _, _, entries)] = described.resources
        if code:
            raise for_code(code)(f"describing topic {topic!r}: {message}")
        own = {e[0]: e[1] for e in entries if e[3] == _DYNAMIC_TOPIC_CONFIG}
        if all(own.get(name) == value for name, value in configs.items()):
            return False
        [altered] = await admin.alter_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic, {**own, **configs})]
        )
        for code, message, *_ in altered.resources:
            if code:
                raise for_code(code)(f"altering topic {topic!r}: {message}")
        return True


async def topic_names(bootstrap: str, *, timeout_s: float = 30.0) -> set[str]:
    """The names of every topic on the broker (internal ones such as ``__consumer_offsets`` too)."""
    async with _admin(bootstrap, timeout_s) as admin:
        return set(await admin.list_topics())


async def delete_topics(bootstrap: str, names: Iterable[str], *, timeout_s: float = 30.0) -> None:
    """Delete topics (tests clean up after themselves); missing ones are ignored."""
    doomed = list(names)
    if not doomed:
        return
    async with _admin(bootstrap, timeout_s) as admin:
        await admin.delete_topics(doomed, timeout_ms=int(timeout_s * 1000))


async def _wait_for_leaders(admin: AIOKafkaAdminClient, names: list[str], timeout_s: float) -> None:
    # CreateTopics returns once the controller recorded the topic; the broker may take a moment
    # to load the partitions, and producing right away then fails with NOT_LEADER retries.
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        try:
            described = await admin.describe_topics(names)
        except KafkaError:
            described = []
        ready = {
            t["topic"]
            for t in described
            if t["error_code"] == 0
            and t["partitions"]
            and all(p["leader"] >= 0 for p in t["partitions"])
        }
        if ready >= set(names):
            return
        if loop.time() >= deadline:
            raise TimeoutError(
                f"topics without a partition leader after {timeout_s} s: {sorted(set(names) - ready)}"
            )
        await asyncio.sleep(0.05)


async def partitions_of(consumer: AIOKafkaConsumer, topic: str) -> list[TopicPartition]:
    """Return every partition of ``topic`` (empty if it does not exist), asking the broker."""
    return await partitions_of_topics(consumer, [topic])


def _wanted(namespace: str, laid: topics.Layout) -> list[topics.TopicSpec]:
    return topics.specs(laid.partitions, namespace, min_insync=laid.min_insync)


async def _layout_on(admin: AIOKafkaAdminClient, layout: topics.Layout | None) -> topics.Layout:
    """``layout`` (else the environment's) on the brokers ``admin`` is connected to."""
    cluster = await admin.describe_cluster()
    return (layout or topics.Layout.from_env()).on(len(cluster["brokers"]))


#: Settings a topic needs at least this much of (a larger value is as safe).
_AT_LEAST = ("max.message.bytes", "min.insync.replicas")


async def unsafe_topics(
    bootstrap: str,
    *,
    namespace: str = topics.NAMESPACE,
    layout: topics.Layout | None = None,
    timeout_s: float = 30.0,
) -> list[str]:
    """Every way hookrun's topics on the brokers differ from what they must be, one line each.

    A missing topic, fewer copies than the replication factor (capped by the brokers), another
    partition count than a keyed topic was made with, and each config of the topic's spec that
    is weaker: a retention that deletes the run log, a smaller message limit, fewer in-sync
    replicas, another cleanup policy.
    """
    async with _admin(bootstrap, timeout_s) as admin:
        laid = await _layout_on(admin, layout)
        wanted = {s.name: s for s in _wanted(namespace, laid)}
        existing = set(await admin.list_topics())
        problems = [f"{name}: missing" for name in sorted(wanted.keys() - existing)]
        present = sorted(wanted.keys() & existing)
        if not present:
            return problems
        described = {t["topic"]: t for t in await admin.describe_topics(present)}
        resources = [ConfigResource(ConfigResourceType.TOPIC, name) for name in present]
        configs: dict[str, dict[str, str]] = {}
        for response in await admin.describe_configs(resources):
            for _code, _message, _type, name, entries in response.resources:
                configs[name] = {e[0]: e[1] for e in entries}
        for name in present:
            spec, parts = wanted[name], described[name]["partitions"]
            copies = min((len(p["replicas"]) for p in parts), default=0)
            if copies < laid.replication_factor:
                problems.append(
                    f"{name}: {copies} copies of a partition, want {laid.replication_factor}"
                    " (HOOKRUN_TOPIC_REPLICATION_FACTOR, capped by the brokers)"
                )
            if spec.partitions != len(parts):
                problems.append(f"{name}: {len(parts)} partitions, want {spec.partitions}")
            have = configs.get(name, {})
            for key, value in sorted(spec.configs.items()):
                now = have.get(key)
                weaker = now is None or int(now) < int(value) if key in _AT_LEAST else now != value
                if weaker:
                    problems.append(f"{name}: {key} is {now}, want {value}")
        return problems
