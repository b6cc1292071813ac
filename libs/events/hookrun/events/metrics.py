"""Prometheus metrics that every service shares, and their exposition at ``GET /metrics``.

The consume loop's metrics live here (records consumed, consumer lag, partitions held), as do
dead-lettered records and Kafka's acknowledgement latency; each service defines its own in its
``metrics`` module. Everything is in prometheus_client's default registry, with the process
and Python collectors it comes with. Hot paths only increment counters and observe
histograms; lag and partitions are read from the loops when scraped.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable, Iterator
from typing import Protocol

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

#: Seconds: an acknowledgement takes about a millisecond on a healthy cluster, and a launch
#: gives up after HOOKRUN_KAFKA_TIMEOUT_S (5 s).
ACK_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

KAFKA_ACK_SECONDS = Histogram(
    "hookrun_kafka_ack_seconds",
    "From handing records to the producer to Kafka's acknowledgement (acks=all), by what was"
    " appended: launch, launch_transaction (with its dedupe record), publish (a consumer's)",
    ["kind"],
    buckets=ACK_BUCKETS,
)
DEAD_LETTERED = Counter(
    "hookrun_dead_lettered_records",
    "Records copied to <topic>.dlq because they could not be decoded or projected, by topic",
    ["topic"],
)
CONSUMED = Counter(
    "hookrun_consumer_records",
    "Records fetched by a consume loop, by consumer group and topic",
    ["group", "topic"],
)


def exposition() -> tuple[bytes, str]:
    """The body and content type of ``GET /metrics``: every metric of the process."""
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


class Observed(Protocol):
    """What a consume loop tells the scrape (:class:`~hookrun.events.consumer.ConsumeLoop`)."""

    #: The ``group`` label: the consuming service.
    group: str

    def positions(self) -> Iterable[tuple[str, int, int, int | None, bool]]:
        """``(topic, partition, position, log end or None, replayed)`` per partition."""
        ...


class _Loops(Collector):
    """Consumer lag and partitions held, read from the live consume loops at each scrape."""

    def __init__(self) -> None:
        self._loops: weakref.WeakSet[Observed] = weakref.WeakSet()

    def add(self, loop: Observed) -> None:
        self._loops.add(loop)

    def collect(self) -> Iterator[Metric]:
        lag = GaugeMetricFamily(
            "hookrun_consumer_lag",
            "Records between a consumer's position and the partition's log end (as of its last"
            " fetch), by consumer group, topic and partition",
            labels=["group", "topic", "partition"],
        )
        held = GaugeMetricFamily(
            "hookrun_consumer_partitions",
            "Partitions assigned to a consume loop, by consumer group and state (replaying, live)",
            labels=["group", "state"],
        )
        counts: dict[tuple[str, str], int] = {}
        for loop in list(self._loops):
            counts.setdefault((loop.group, "live"), 0)
            counts.setdefault((loop.group, "replaying"), 0)
            for topic, partition, position, end, live in loop.positions():
                if end is not None:
                    lag.add_metric([loop.group, topic, str(partition)], max(0, end - position))
                counts[(loop.group, "live" if live else "replaying")] += 1
        for labels, n in counts.items():
            held.add_metric(list(labels), n)
        yield lag
        yield held


_LOOPS = _Loops()
REGISTRY.register(_LOOPS)


def watch(loop: Observed) -> None:
    """Report ``loop``'s lag and partitions at each scrape, while the loop exists."""
    _LOOPS.add(loop)
