"""Three local Kafka brokers (KRaft) from the same jars as :class:`LocalKafka`: a cluster to
kill a broker in (``make chaos BROKERS=3``, tests).

Each node is a combined broker and controller, so three JVMs make both the brokers and a
three-voter controller quorum, which keeps working with one node dead. The cluster's settings
are the production ones hookrun's topics rely on: three copies of everything, two in sync for
an ``acks=all`` append (transactions included), no unclean leader election.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Mapping
from pathlib import Path

from aiokafka.admin import AIOKafkaAdminClient

from hookrun.dev.kafka import LocalKafka
from hookrun.dev.kafka_dist import (
    BROKER_SETTINGS,
    START_TIMEOUT_S,
    STOP_TIMEOUT_S,
    KafkaError,
    cluster_id,
)
from hookrun.dev.kafka_net import brokers_listed, free_port
from hookrun.events.clients import admin_settings

log = logging.getLogger("hookrun.dev.kafka")

NODES = 3

#: BROKER_SETTINGS made for three brokers: the internal topics (consumer offsets, transaction
#: state) and default topics get three copies and need two in sync, as hookrun's own topics do
#: at HOOKRUN_TOPIC_REPLICATION_FACTOR=3, and a replica that fell behind never becomes leader.
CLUSTER_SETTINGS: Mapping[str, str] = {
    **BROKER_SETTINGS,
    "default.replication.factor": "3",
    "min.insync.replicas": "2",
    "offsets.topic.replication.factor": "3",
    "transaction.state.log.replication.factor": "3",
    "transaction.state.log.min.isr": "2",
    "unclean.leader.election.enable": "false",
    "group.initial.rebalance.delay.ms": "0",
}


class ClusterNode(LocalKafka):
    """One node of a :class:`LocalKafkaCluster`: broker and controller ``node_id``."""

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        node_id: int,
        port: int,
        controller_port: int,
        voters: str,
        cluster: str,
        *,
        die_with_parent: bool = False,
    ) -> None:
        super().__init__(data_dir, port, controller_port, die_with_parent=die_with_parent)
        self.node_id = node_id
        self.voters = voters
        self.cluster_id = cluster
        self.settings = CLUSTER_SETTINGS

    def __repr__(self) -> str:
        return f"ClusterNode({self.node_id}, port={self.port}, pid={self.pid})"

    def _role_config(self) -> list[str]:
        return [
            "process.roles=broker,controller",
            f"node.id={self.node_id}",
            f"controller.quorum.voters={self.voters}",
        ]


def _distinct_ports(count: int) -> list[int]:
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports


class LocalKafkaCluster:
    """``nodes`` local brokers in ``data_dir/node-<id>``, on free ports, one cluster id."""

    def __init__(
        self, data_dir: str | os.PathLike[str], nodes: int = NODES, *, die_with_parent: bool = False
    ) -> None:
        self.data_dir = Path(data_dir).resolve()
        ports = _distinct_ports(2 * nodes)
        voters = ",".join(f"{i + 1}@127.0.0.1:{ports[nodes + i]}" for i in range(nodes))
        cluster = cluster_id()
        self.nodes = [
            ClusterNode(
                self.data_dir / f"node-{i + 1}",
                i + 1,
                ports[i],
                ports[nodes + i],
                voters,
                cluster,
                die_with_parent=die_with_parent,
            )
            for i in range(nodes)
        ]

    def __repr__(self) -> str:
        return f"LocalKafkaCluster({self.nodes!r})"

    @property
    def bootstrap(self) -> str:
        """Every node's address: a client finds the cluster while any one of them is down."""
        return ",".join(node.bootstrap for node in self.nodes)

    def node(self, node_id: int) -> ClusterNode:
        """The node with this broker id."""
        return next(node for node in self.nodes if node.node_id == node_id)

    def start(self, timeout: float = START_TIMEOUT_S) -> LocalKafkaCluster:
        """Start every node (keeping the data of an earlier start) and wait until each answers
        and lists all of them. Raises KafkaError, with the failing node's log, after ``timeout``
        seconds; then no node is left running."""
        started = time.monotonic()
        try:
            # All at once: a node serves clients only once a majority of the voters runs.
            for node in self.nodes:
                node.start(timeout, wait=False)
            self.wait_ready(timeout)
        except BaseException:
            self.kill()
            raise
        log.info(
            "a Kafka cluster of %d answers on %s after %.1f s",
            len(self.nodes),
            self.bootstrap,
            time.monotonic() - started,
        )
        return self

    def wait_ready(self, timeout: float = START_TIMEOUT_S) -> None:
        """Block until every node answers and lists every broker; KafkaError on a timeout."""
        deadline = time.monotonic() + timeout
        for node in self.nodes:
            while brokers_listed(node.bootstrap) < len(self.nodes):
                if not node.is_running():
                    raise KafkaError(node._failure("exited during start-up"))
                if time.monotonic() >= deadline:
                    raise KafkaError(
                        node._failure(f"did not list {len(self.nodes)} brokers in {timeout:.0f} s")
                    )
                time.sleep(0.2)

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> bool:
        """Stop every node with SIGTERM, all at once (one by one, the last would wait for a
        quorum that is gone), SIGKILL after ``timeout``; return False if none was running."""
        stopped: list[bool] = []
        threads = [
            threading.Thread(target=lambda n=node: stopped.append(n.stop(timeout)))
            for node in self.nodes
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return any(stopped)

    def kill(self) -> bool:
        """SIGKILL every node; return False if none was running."""
        return any([node.kill() for node in self.nodes])

    async def leaders(self, topic: str, *, timeout_s: float = 15.0) -> Counter[int]:
        """How many partitions of ``topic`` each broker id leads now."""
        admin = AIOKafkaAdminClient(
            **admin_settings(self.bootstrap, request_timeout_ms=int(timeout_s * 1000))
        )
        await admin.start()
        try:
            [described] = await admin.describe_topics([topic])
        finally:
            await admin.close()
        if described["error_code"]:
            raise KafkaError(f"describing {topic}: error {described['error_code']}")
        return Counter(p["leader"] for p in described["partitions"] if p["leader"] >= 0)

    def kill_and_restart(self, node: ClusterNode, down_s: float, stopping: threading.Event) -> None:
        """SIGKILL ``node``, as a crash would, and start it again on its data after ``down_s``
        (not when ``stopping`` is set first); returns once it answers again."""
        node.kill()
        if not stopping.wait(down_s):
            node.start(timeout=180)
