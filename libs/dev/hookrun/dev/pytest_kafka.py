"""Pytest plugin: a real Kafka broker for the test session, test topics and a spare broker."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, NoReturn, Protocol
from urllib.parse import urlsplit

import pytest

from hookrun.dev.kafka import LocalKafka
from hookrun.dev.kafka_dist import BROKER_SETTINGS, DEFAULT_BOOTSTRAP, KAFKA_VERSION, cluster_id
from hookrun.dev.kafka_net import (
    broker_answers,
    docker_available,
    env_security,
    free_port,
    wait_for_broker,
)
from hookrun.dev.kafka_secure import SecureKafka
from hookrun.events.kafka import delete_topics, ensure_topics, topic_names
from hookrun.events.topics import TopicSpec


def missing_part(reason: str) -> NoReturn:
    """A real part a test needs is missing: a failure under CI (which must run every test), a
    skip naming ``reason`` elsewhere."""
    if os.environ.get("CI"):
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


KAFKA_FIXTURES = frozenset({"kafka_bootstrap", "new_topic", "spare_kafka", "secure_kafka"})


class NewTopic(Protocol):
    """The ``new_topic`` fixture: ``await new_topic(partitions=3, configs=None) -> name``."""

    def __call__(
        self, partitions: int = 3, configs: Mapping[str, str] | None = None
    ) -> Awaitable[str]: ...


class _KafkaRun:
    """Session state: which broker the tests use and how many broker tests ran."""

    def __init__(self) -> None:
        self.bootstrap: str | None = None
        self.source = ""
        self.ran: set[str] = set()
        #: tests that use the SASL_SSL broker (``secure_kafka``)
        self.secure: set[str] = set()
        #: tests marked ``cluster``: they start a three-broker cluster of their own
        self.cluster: set[str] = set()

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        # Count a test when its body ran: a setup error or a skip never reached the broker.
        if report.when == "call" and not report.skipped and "kafka" in report.keywords:
            self.ran.add(report.nodeid)

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        where = f"bootstrap {self.bootstrap}, {self.source}" if self.bootstrap else "none needed"
        if not self.bootstrap and self.ran:
            where = "only brokers of their own: the SASL_SSL one or a cluster"
        terminalreporter.write_line(
            f"kafka: {len(self.ran)} tests ran against a real broker ({where}); "
            f"{len(self.ran & self.secure)} of them against the SASL_SSL broker (SCRAM-SHA-512 "
            f"over TLS), {len(self.ran & self.cluster)} against a three-broker cluster"
        )


_RUN = pytest.StashKey[_KafkaRun]()

#: Namespaces handed out by ``new_namespace`` in this process.
_NAMESPACES: list[str] = []


def new_namespace(prefix: str = "t") -> str:
    """A fresh ``<prefix>-<hex>`` namespace for one test or module.

    Its topics (``<namespace>.*``, whoever created them: the test or the services it started)
    are deleted when the session ends, on a broker the session did not start itself: a reused
    development broker otherwise piles them up (792 topics after a day slowed the gateway's
    slowest launches from 24-34 to 40-55 ms).
    """
    namespace = f"{prefix}-{uuid.uuid4().hex[:8]}"
    _NAMESPACES.append(namespace)
    return namespace


async def delete_namespaces(bootstrap: str, namespaces: list[str], timeout_s: float = 30.0) -> int:
    """Delete every topic of ``namespaces`` on the broker; return how many there were."""
    names = await topic_names(bootstrap, timeout_s=timeout_s)
    prefixes = tuple(f"{namespace}." for namespace in namespaces)
    doomed = [name for name in names if name.startswith(prefixes)]
    await delete_topics(bootstrap, doomed, timeout_s=timeout_s)
    return len(doomed)


def pytest_configure(config: pytest.Config) -> None:
    run = _KafkaRun()
    config.stash[_RUN] = run
    config.pluginmanager.register(run, "hookrun-kafka-run")


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # tryfirst: the marker must be on the item before `-m "not kafka"` deselects by it.
    run = config.stash[_RUN]
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if KAFKA_FIXTURES & fixtures:
            item.add_marker(pytest.mark.kafka)
        if "secure_kafka" in fixtures:
            run.secure.add(item.nodeid)
        if item.get_closest_marker("cluster") is not None:
            item.add_marker(pytest.mark.kafka)
            run.cluster.add(item.nodeid)


def _start_container() -> tuple[str, Callable[[], None]]:
    # testcontainers' KafkaContainer drives Confluent's image scripts; apache/kafka (the image
    # docker-compose uses) is configured by KAFKA_* variables instead. The host port is fixed
    # up front so the advertised listener can name it.
    from testcontainers.core.container import DockerContainer  # type: ignore[import-untyped]

    port = free_port()
    container = DockerContainer(f"apache/kafka:{KAFKA_VERSION}").with_bind_ports(9092, port)
    # A remote engine (DOCKER_HOST=tcp://...) publishes the port on its own address.
    docker_host = urlsplit(os.environ.get("DOCKER_HOST", ""))
    host = docker_host.hostname if docker_host.scheme == "tcp" and docker_host.hostname else None
    host = host or "127.0.0.1"
    env = {
        "CLUSTER_ID": cluster_id(),
        "KAFKA_NODE_ID": "1",
        "KAFKA_PROCESS_ROLES": "broker,controller",
        "KAFKA_LISTENERS": "PLAINTEXT://0.0.0.0:9092,BROKER://0.0.0.0:19092,"
        "CONTROLLER://0.0.0.0:9093",
        "KAFKA_ADVERTISED_LISTENERS": f"PLAINTEXT://{host}:{port},BROKER://localhost:19092",
        "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP": "PLAINTEXT:PLAINTEXT,BROKER:PLAINTEXT,"
        "CONTROLLER:PLAINTEXT",
        "KAFKA_INTER_BROKER_LISTENER_NAME": "BROKER",
        "KAFKA_CONTROLLER_LISTENER_NAMES": "CONTROLLER",
        "KAFKA_CONTROLLER_QUORUM_VOTERS": "1@localhost:9093",
        **{
            "KAFKA_" + key.upper().replace(".", "_"): value
            for key, value in BROKER_SETTINGS.items()
        },
    }
    for key, value in env.items():
        container = container.with_env(key, value)
    container.start()
    bootstrap = f"{host}:{port}"
    try:
        wait_for_broker(bootstrap)
    except BaseException:
        container.stop()
        raise
    return bootstrap, container.stop


@pytest.fixture(scope="session")
def kafka_bootstrap(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """Bootstrap address of a real broker for the whole session; never skips.

    KAFKA_BOOTSTRAP_SERVERS if set, else a testcontainers broker if Docker answers, else a
    broker already answering on 127.0.0.1:9092, else a LocalKafka started for the session.
    """
    run = request.config.stash[_RUN]
    configured = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "").strip()
    stop: Callable[[], object] | None = None
    try:
        if configured:
            wait_for_broker(configured, timeout=60, security=env_security())
            bootstrap, run.source = configured, "KAFKA_BOOTSTRAP_SERVERS"
        elif docker_available():
            bootstrap, stop = _start_container()
            run.source = f"apache/kafka:{KAFKA_VERSION} container"
        elif broker_answers(DEFAULT_BOOTSTRAP):
            bootstrap, run.source = DEFAULT_BOOTSTRAP, "reused the running broker"
        else:
            kafka = LocalKafka(
                tmp_path_factory.mktemp("kafka"), port=free_port(), die_with_parent=True
            ).start()
            bootstrap, stop = kafka.bootstrap, kafka.stop
            run.source = f"local Kafka {KAFKA_VERSION} started for this session"
    except Exception as exc:
        # A failure, not a skip: CI must not pass with its broker tests silently missing.
        pytest.fail(f"could not get a Kafka broker for the tests: {exc}", pytrace=False)
    run.bootstrap = bootstrap
    try:
        yield bootstrap
    finally:
        if stop is not None:
            stop()  # a broker of the session's own: its topics go with it
        elif _NAMESPACES:
            try:
                asyncio.run(delete_namespaces(bootstrap, _NAMESPACES))
            except Exception:  # best effort: a broken broker must not fail the session now
                pass
            _NAMESPACES.clear()


@pytest.fixture
async def new_topic(kafka_bootstrap: str) -> AsyncIterator[NewTopic]:
    """Factory of fresh ``test-<uuid>`` topics on the session broker, deleted after the test."""
    created: list[str] = []

    async def make(partitions: int = 3, configs: Mapping[str, str] | None = None) -> str:
        name = f"test-{uuid.uuid4()}"
        spec = TopicSpec(name, partitions=partitions, configs=dict(configs or {}))
        await ensure_topics(kafka_bootstrap, [spec])
        created.append(name)
        return name

    yield make
    # Keeps a reused development broker from piling up test topics; best effort only.
    try:
        await delete_topics(kafka_bootstrap, created, timeout_s=10)
    except Exception:  # a test that broke the broker must not also fail in teardown
        pass


@pytest.fixture
def spare_kafka(tmp_path: Path) -> Iterator[LocalKafka]:
    """A second, started LocalKafka on free ports that the test may stop, kill and start."""
    kafka = LocalKafka(tmp_path / "spare-kafka", port=free_port(), die_with_parent=True)
    try:
        kafka.start()
    except Exception as exc:
        pytest.fail(f"could not start the spare Kafka broker: {exc}", pytrace=False)
    try:
        yield kafka
    finally:
        kafka.stop(timeout=10)


@pytest.fixture(scope="session")
def secure_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureKafka]:
    """A broker of the session's own that accepts only SCRAM-SHA-512 over TLS, with a CA made
    for it; started when a test first asks, stopped at the end of the session. Never skips."""
    kafka = SecureKafka(
        tmp_path_factory.mktemp("secure-kafka"), port=free_port(), die_with_parent=True
    )
    try:
        kafka.start()
    except Exception as exc:
        pytest.fail(f"could not start the SASL_SSL Kafka broker: {exc}", pytrace=False)
    try:
        yield kafka
    finally:
        kafka.stop()
