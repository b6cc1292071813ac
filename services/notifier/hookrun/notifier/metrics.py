"""The notifier's Prometheus metrics: attempts by outcome and status class, their latency, and
the deliveries waiting; the consume loop's own metrics are in :mod:`hookrun.events.metrics`."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from prometheus_client import Counter, Gauge, Histogram

from hookrun.events.base import Event
from hookrun.events.notifications import DeliveryAttempted, DeliveryCanceled, DeliveryExhausted
from hookrun.notifier.handlers import Delivery

#: Seconds an HTTP attempt takes; the notifier's timeout is 10 s by default.
ATTEMPT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
#: Seconds from a run's end to its notification's acknowledgement: milliseconds when the first
#: attempt succeeds, hours when retries were needed.
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 7200)

DELIVERIES = Counter(
    "hookrun_delivery_attempts",
    "Notification attempts, by outcome (succeeded, failed, refused, gone) and HTTP status"
    " class (2xx..5xx, or none: no answer)",
    ["outcome", "status_class"],
)
EXHAUSTED = Counter(
    "hookrun_deliveries_exhausted", "Deliveries given up after their last attempt failed"
)
CANCELED = Counter(
    "hookrun_deliveries_canceled",
    "Deliveries given up without another attempt, by cause (filtered: the subscription's"
    " statuses no longer include the run's; deleted; disabled)",
    ["cause"],
)
ATTEMPT_SECONDS = Histogram(
    "hookrun_delivery_attempt_seconds",
    "How long one HTTP attempt took (connect to the whole answer)",
    buckets=ATTEMPT_BUCKETS,
)
LATENCY_SECONDS = Histogram(
    "hookrun_delivery_latency_seconds",
    "From a run's end (RunFinished) to a subscriber's 2xx for its notification",
    buckets=LATENCY_BUCKETS,
)
RETRIES_PENDING = Gauge(
    "hookrun_delivery_retries_pending", "Deliveries whose last attempt failed, waiting to retry"
)
PENDING = Gauge("hookrun_deliveries_pending", "Deliveries not done yet (first attempts included)")


def status_class(code: int | None) -> str:
    """``2xx`` .. ``5xx`` for an HTTP status, ``none`` when no answer came."""
    return "none" if code is None else f"{code // 100}xx"


def attempted(delivery: Delivery, events: Sequence[Event]) -> None:
    """Count what an attempt came to (its DeliveryAttempted, and a DeliveryExhausted), or the
    DeliveryCanceled made instead."""
    for event in events:
        if isinstance(event, DeliveryAttempted):
            DELIVERIES.labels(event.outcome, status_class(event.status_code)).inc()
            if event.duration_ms is not None:
                ATTEMPT_SECONDS.observe(event.duration_ms / 1000)
            if event.outcome == "succeeded" and delivery.run is not None:
                ended = delivery.run.completed_at.timestamp()
                LATENCY_SECONDS.observe(max(0.0, time.time() - ended))
        elif isinstance(event, DeliveryExhausted):
            EXHAUSTED.inc()
        elif isinstance(event, DeliveryCanceled):
            CANCELED.labels(event.cause).inc()


def watch(deliveries: Callable[[], list[Delivery]]) -> None:
    """Count the waiting deliveries (``deliveries()``: those of the partitions held) when scraped."""
    RETRIES_PENDING.set_function(
        lambda: sum(1 for d in deliveries() if not d.done and d.attempts > d.round_start)
    )
    PENDING.set_function(lambda: sum(1 for d in deliveries() if not d.done))
