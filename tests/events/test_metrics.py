"""The consume loop's metrics on the in-memory broker: records fetched, lag, partitions held,
dead letters; and their exposition."""

from __future__ import annotations

from prometheus_client import REGISTRY

from hookrun.events import metrics, topics
from hookrun.events.memory import MemoryBroker
from hookrun.events.notifications import RedeliveryRequested
from tests.events.tally import Tally, request, steps_until, tally_loop


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_records_lag_and_partitions_are_reported_per_group():
    ns = "t-metrics"
    runs = topics.named(topics.RUNS, ns)
    broker = MemoryBroker()
    broker.create_topics(ns, partitions=2)
    before = sample("hookrun_consumer_records_total", group="tally", topic=runs)
    await broker.publisher(ns).publish([request(f"r{n}") for n in range(3)])
    loop = tally_loop(Tally(), broker.consumer("tally-metrics"), broker.publisher(ns))
    await loop.start()
    try:
        await steps_until(loop, lambda: loop.ready)
        records = sample("hookrun_consumer_records_total", group="tally", topic=runs)
        assert records - before == 3
        lags = {
            (labels["partition"], value)
            for name, labels, value in _samples("hookrun_consumer_lag")
            if labels["topic"] == runs
        }
        assert lags == {("0", 0.0), ("1", 0.0)}
        assert sample("hookrun_consumer_partitions", group="tally", state="live") >= 2
        # Appended but not fetched yet: the lag shows them.
        await broker.publisher(ns).publish([request(f"late{n}") for n in range(4)])
        behind = sum(
            value
            for name, labels, value in _samples("hookrun_consumer_lag")
            if labels["topic"] == runs
        )
        assert behind == 4
    finally:
        await loop.close()


async def test_a_dead_lettered_record_is_counted_by_its_topic():
    ns = "t-metrics-dlq"
    runs = topics.named(topics.RUNS, ns)
    broker = MemoryBroker()
    broker.create_topics(ns, partitions=1)
    before = sample("hookrun_dead_lettered_records_total", topic=runs)
    headers = [("ce_id", b"bad"), ("ce_type", RedeliveryRequested.type.encode())]
    broker.append(runs, b"not json", key=b"run-x", headers=headers)
    loop = tally_loop(Tally(), broker.consumer("tally-dlq"), broker.publisher(ns))
    await loop.start()
    try:
        await steps_until(loop, lambda: loop.ready)
    finally:
        await loop.close()
    assert sample("hookrun_dead_lettered_records_total", topic=runs) - before == 1


def test_the_exposition_is_prometheus_text_with_hookrun_metrics():
    body, content_type = metrics.exposition()
    assert content_type.startswith("text/plain")
    assert b"# TYPE hookrun_kafka_ack_seconds histogram" in body
    assert b"# TYPE hookrun_dead_lettered_records_total counter" in body


def _samples(name: str) -> list[tuple[str, dict[str, str], float]]:
    return [
        (s.name, s.labels, s.value)
        for family in REGISTRY.collect()
        for s in family.samples
        if s.name == name
    ]
