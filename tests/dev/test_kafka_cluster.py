"""The three-broker cluster's configuration, without starting it (chaos starts it for real)."""

from __future__ import annotations

from pathlib import Path

from hookrun.dev.kafka_cluster import LocalKafkaCluster


def _properties(path: Path) -> dict[str, str]:
    lines = path.read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line and not line.startswith("#"))


def test_every_node_names_all_three_voters_and_has_its_own_id_and_ports(tmp_path: Path) -> None:
    cluster = LocalKafkaCluster(tmp_path)
    props = []
    for node in cluster.nodes:
        node.data_dir.mkdir(parents=True)
        props.append(_properties(node._write_config()))
    assert [p["node.id"] for p in props] == ["1", "2", "3"]
    assert len({p["controller.quorum.voters"] for p in props}) == 1
    assert props[0]["controller.quorum.voters"].count("@127.0.0.1:") == 3
    ports = [n.port for n in cluster.nodes] + [n.controller_port for n in cluster.nodes]
    assert len(set(ports)) == 6
    assert cluster.bootstrap == ",".join(f"127.0.0.1:{n.port}" for n in cluster.nodes)
    assert len({n.cluster_id for n in cluster.nodes}) == 1


def test_the_cluster_keeps_three_copies_and_needs_two_in_sync(tmp_path: Path) -> None:
    node = LocalKafkaCluster(tmp_path).nodes[0]
    node.data_dir.mkdir(parents=True)
    props = _properties(node._write_config())
    assert props["default.replication.factor"] == "3"
    assert props["min.insync.replicas"] == "2"
    assert props["offsets.topic.replication.factor"] == "3"
    assert props["transaction.state.log.replication.factor"] == "3"
    assert props["transaction.state.log.min.isr"] == "2"
    assert props["unclean.leader.election.enable"] == "false"
    assert props["group.initial.rebalance.delay.ms"] == "0"
