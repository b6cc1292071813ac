"""The status service's Prometheus metrics: how far the projection is behind the log, and
wrong admin tokens.

The consume loop's own metrics (records fetched, consumer lag) are in
:mod:`hookrun.events.metrics`; the projection's lag here counts from what is stored, which is
what run info answers from.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import REGISTRY, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response

from hookrun.events.metrics import exposition

if TYPE_CHECKING:
    from hookrun.status.projector import Projector

#: Seconds from a record's append to its batch stored: tens of milliseconds when caught up.
DELAY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)

APPLIED = Counter("hookrun_status_records_applied", "Records stored by the projection")
DELAY_SECONDS = Histogram(
    "hookrun_status_projection_delay_seconds",
    "From the append of a batch's newest record to the batch stored (one per batch)",
    buckets=DELAY_BUCKETS,
)
ADMIN_AUTH_FAILURES = Counter(
    "hookrun_admin_auth_failures",
    "Wrong admin tokens (throttled=false) and attempts refused with 429 without a comparison"
    " (throttled=true), by where: the admin API's bearer token or the dashboard's sign-in",
    ["kind", "throttled"],
)
for _kind in ("api", "signin"):  # every series from the start, so rate() sees the first one
    for _throttled in ("false", "true"):
        ADMIN_AUTH_FAILURES.labels(kind=_kind, throttled=_throttled)


class _ProjectionLag(Collector):
    """``hookrun_status_projection_lag`` per partition, read from the projector when scraped."""

    def __init__(self) -> None:
        self.projector: Projector | None = None

    def collect(self) -> Iterator[Metric]:
        lag = GaugeMetricFamily(
            "hookrun_status_projection_lag",
            "Records between the stored offset of a partition and its log end (as of the last"
            " fetch), by topic and partition",
            labels=["topic", "partition"],
        )
        projector = self.projector
        loop = projector.loop if projector is not None else None
        if projector is not None and loop is not None:
            for topic, partition, position, end, _ in loop.positions():
                if end is not None:
                    stored = projector.positions.get((topic, partition), position)
                    lag.add_metric([topic, str(partition)], max(0, end - stored))
        yield lag


_LAG = _ProjectionLag()
REGISTRY.register(_LAG)


def watch(projector: Projector) -> None:
    """Report ``projector``'s lag at each scrape."""
    _LAG.projector = projector


async def serve_metrics(request: Request) -> Response:
    """``GET /metrics``: every metric of the process, in Prometheus' text format."""
    body, content_type = exposition()
    return Response(body, media_type=content_type)
