"""hookrun's topics on the real broker: laid out as the settings say, and every unsafe one found."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest

from hookrun.dev.pytest_kafka import new_namespace
from hookrun.events import topics
from hookrun.events.admin import ensure_topics, ensure_topics_forever, unsafe_topics

pytestmark = pytest.mark.kafka


def test_the_layout_comes_from_the_environment_and_is_capped_by_the_brokers():
    assert topics.Layout.from_env({}) == topics.Layout(replication_factor=3, partitions=6)
    layout = topics.Layout.from_env(
        {"HOOKRUN_TOPIC_REPLICATION_FACTOR": "5", "HOOKRUN_TOPIC_PARTITIONS": "12"}
    )
    assert (layout.replication_factor, layout.partitions, layout.min_insync) == (5, 12, 2)
    one = layout.on(1)
    assert (one.replication_factor, one.min_insync) == (1, 1)
    with pytest.raises(ValueError, match="HOOKRUN_TOPIC_PARTITIONS: must be a whole number"):
        topics.Layout.from_env({"HOOKRUN_TOPIC_PARTITIONS": "0"})


def test_the_run_log_is_kept_for_ever_and_three_copies_need_two_in_sync():
    specs = {s.name: s for s in topics.specs(6, min_insync=2)}
    assert specs[topics.RUNS].configs["retention.ms"] == "-1"
    assert specs[topics.dlq(topics.RUNS)].configs["retention.ms"] == "-1"
    assert all(s.configs["min.insync.replicas"] == "2" for s in specs.values())
    assert "min.insync.replicas" not in topics.specs(6)[0].configs


async def test_topics_made_by_hookrun_are_safe(kafka_bootstrap):
    ns = new_namespace()
    await ensure_topics(kafka_bootstrap, namespace=ns)
    assert await unsafe_topics(kafka_bootstrap, namespace=ns) == []


async def test_a_run_log_kept_seven_days_is_reported_by_the_check_and_at_start(
    kafka_bootstrap, caplog
):
    ns = new_namespace()
    # As a broker's defaults would make it: the run log deleted after 7 days, 3 partitions.
    weak = [
        topics.TopicSpec(s.name, 3 if s.partitions > 1 else 1, {"retention.ms": "604800000"})
        if s.name == topics.named(topics.RUNS, ns)
        else s
        for s in topics.specs(namespace=ns)
    ]
    await ensure_topics(kafka_bootstrap, weak)
    runs = topics.named(topics.RUNS, ns)
    assert await unsafe_topics(kafka_bootstrap, namespace=ns) == [
        f"{runs}: 3 partitions, want 6",
        f"{runs}: retention.ms is 604800000, want -1",
    ]
    with caplog.at_level(logging.WARNING, logger="hookrun.events.admin"):
        await ensure_topics_forever(kafka_bootstrap, namespace=ns)
    assert f"unsafe topic: {runs}: retention.ms is 604800000, want -1" in caplog.text

    checked = subprocess.run(
        [sys.executable, "-m", "hookrun.cli", "topics", "check", "--namespace", ns],
        env={**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert checked.returncode == 1
    assert f"{runs}: retention.ms is 604800000, want -1" in checked.stdout.splitlines()
