"""The Kafka distribution hookrun runs: versions, JVM and broker settings, fetched with Maven."""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import secrets
import shutil
import subprocess
import uuid
from collections.abc import Mapping
from pathlib import Path

KAFKA_VERSION = "3.9.1"
# Kafka 3.9 logs through slf4j 1.7; the distribution binds it to reload4j, and so do we.
SLF4J_VERSION = "1.7.36"
RELOAD4J_VERSION = "1.2.25"
# Pinned because Maven 3.8's default dependency plugin (2.8) is a decade old.
DEPENDENCY_PLUGIN_VERSION = "3.8.1"

DEFAULT_PORT = 9092
DEFAULT_BOOTSTRAP = f"127.0.0.1:{DEFAULT_PORT}"
START_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 20.0
# ZGC rather than G1: on a 2-core machine G1's young collections stopped the broker for 7-46 ms
# every few seconds under load (GC log), and every produce request in flight waited for it,
# which made the gateway's p99; ZGC's pauses stayed under 9 ms (mostly under 4), with the same
# broker CPU per produced record once warm. ZGC wants heap headroom, hence 1 GiB at most (it
# gives back what it does not use).
JVM_OPTS = (
    "-Xms256m",
    "-Xmx1g",
    "-XX:+UseZGC",
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.awt.headless=true",
)

# Broker settings shared by the local broker and the test container. Tuned for one node:
# replication factors of 1, few internal partitions (the offsets topic is created on the first
# consumer group, 50 partitions would cost seconds), no rebalance delay (consumer tests would
# otherwise wait 3 s per group), and topics only exist when created explicitly.
BROKER_SETTINGS: Mapping[str, str] = {
    "num.partitions": "3",
    "default.replication.factor": "1",
    "offsets.topic.replication.factor": "1",
    "offsets.topic.num.partitions": "3",
    "transaction.state.log.replication.factor": "1",
    "transaction.state.log.min.isr": "1",
    "transaction.state.log.num.partitions": "3",
    "min.insync.replicas": "1",
    "group.initial.rebalance.delay.ms": "0",
    # After a crash (SIGKILL) the restarted broker is refused as a duplicate registration until
    # the dead incarnation's session expires: 4 s instead of 9 s keeps crash tests quick.
    "broker.heartbeat.interval.ms": "1000",
    "broker.session.timeout.ms": "4000",
    "auto.create.topics.enable": "false",
    "message.max.bytes": "8388608",
    "replica.fetch.max.bytes": "8388608",
    "socket.request.max.bytes": "104857600",
    "num.network.threads": "2",
    "num.io.threads": "4",
    "num.recovery.threads.per.data.dir": "1",
    "log.retention.hours": "168",
    "log.retention.bytes": "1073741824",
    "log.segment.bytes": "67108864",
    "log.retention.check.interval.ms": "300000",
}


log = logging.getLogger("hookrun.dev.kafka")


class KafkaError(RuntimeError):
    """Fetching, starting or stopping the local broker failed."""


def cache_dir() -> Path:
    """Return the root of hookrun's download cache (``HOOKRUN_CACHE_DIR`` or ~/.cache/hookrun)."""
    env = os.environ.get("HOOKRUN_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "hookrun"


def kafka_home(version: str = KAFKA_VERSION) -> Path:
    """Return the directory whose ``libs/`` holds the broker's jars for ``version``."""
    return cache_dir() / f"kafka-{version}"


def _pom(version: str) -> str:
    deps = [
        ("org.apache.kafka", "kafka_2.13", version),
        ("org.slf4j", "slf4j-reload4j", SLF4J_VERSION),
        ("ch.qos.reload4j", "reload4j", RELOAD4J_VERSION),
    ]
    dep_xml = "\n".join(
        f"    <dependency><groupId>{g}</groupId><artifactId>{a}</artifactId>"
        f"<version>{v}</version></dependency>"
        for g, a, v in deps
    )
    return f"""<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>dev.hookrun</groupId>
  <artifactId>kafka-runtime</artifactId>
  <version>{version}</version>
  <packaging>pom</packaging>
  <dependencies>
{dep_xml}
  </dependencies>
  <build>
    <plugins>
      <plugin>
        <groupId>org.apache.maven.plugins</groupId>
        <artifactId>maven-dependency-plugin</artifactId>
        <version>{DEPENDENCY_PLUGIN_VERSION}</version>
      </plugin>
    </plugins>
  </build>
</project>
"""


def fetch(version: str = KAFKA_VERSION) -> Path:
    """Download the broker's jars with Maven into the cache, once; return the ``libs/`` dir.

    Raises KafkaError when Maven is missing or fails.
    """
    home = kafka_home(version)
    marker = home / ".complete"
    if marker.exists():
        return home / "libs"
    mvn = shutil.which("mvn")
    if mvn is None:
        raise KafkaError("Maven (mvn) is not on PATH: it is needed once to download Kafka")
    home.parent.mkdir(parents=True, exist_ok=True)
    # Build in a private temp dir and rename at the end, so an interrupted or concurrent fetch
    # never leaves a half-filled libs/ that a later start would try to run.
    tmp = home.parent / f".{home.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
    tmp.mkdir()
    try:
        (tmp / "pom.xml").write_text(_pom(version))
        log.info("downloading Apache Kafka %s with Maven into %s", version, home)
        cmd = [
            mvn,
            "-q",
            "-B",
            "-Dstyle.color=never",
            "dependency:copy-dependencies",
            "-DoutputDirectory=libs",
            "-DincludeScope=runtime",
        ]
        result = subprocess.run(
            cmd, cwd=tmp, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        if result.returncode != 0:
            tail = "\n".join(result.stdout.splitlines()[-30:])
            raise KafkaError(f"mvn failed (exit {result.returncode}) fetching Kafka:\n{tail}")
        if not (tmp / "libs" / f"kafka_2.13-{version}.jar").exists():
            raise KafkaError(f"mvn succeeded but kafka_2.13-{version}.jar is missing")
        (tmp / ".complete").write_text(f"kafka_2.13 {version}\n")
        if home.exists() and not marker.exists():
            shutil.rmtree(home)  # a leftover from an older, interrupted layout
        try:
            tmp.rename(home)
        except OSError:
            if not marker.exists():  # only fine if a concurrent fetch won the race
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return home / "libs"


def java_binary() -> str:
    """The java binary Kafka runs on: $JAVA_HOME/bin/java, else the one on PATH."""
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").exists():
        return str(Path(java_home) / "bin" / "java")
    java = shutil.which("java")
    if java is None:
        raise KafkaError("java is not on PATH (Kafka needs Java 17; set JAVA_HOME or PATH)")
    return java


def cluster_id() -> str:
    """Return a new random Kafka cluster id."""
    # Kafka cluster ids are 16 random bytes in URL-safe base64 without padding (22 chars), the
    # same as `kafka-storage random-uuid`, made here to save a JVM start. Like Kafka's own
    # Uuid.randomUuid(), never one starting with "-": `format -t -abc...` takes it for an option
    # and the broker does not start (one fresh data dir in 64).
    while True:
        value = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not value.startswith("-"):
            return value


def configured_ports(data_dir: str | os.PathLike[str]) -> dict[str, int]:
    """Return the listener ports (``PLAINTEXT``, ``CONTROLLER``) of the last start in data_dir."""
    ports: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in (Path(data_dir) / "server.properties").read_text().splitlines():
            key, _, value = line.partition("=")
            if key.strip() == "listeners":
                for listener in value.split(","):
                    name, _, address = listener.strip().partition("://")
                    port = address.rpartition(":")[2]
                    if port.isdigit():
                        ports[name] = int(port)
    return ports
