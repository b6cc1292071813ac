"""The gateway's Prometheus metrics: launches by trigger and outcome, Kafka's acknowledgements.

A launch costs about 100 µs of CPU, so counting one is a dictionary lookup and an increment:
each (trigger, outcome, reason) child is made once. Labels stay bounded: a trigger id the
config does not have is ``_unknown`` (anyone can send any), and a rejection's reason is its
kind, never the text the trigger log keeps.
"""

from __future__ import annotations

import logging
from collections.abc import Container

from prometheus_client import Counter
from starlette.requests import Request
from starlette.responses import Response

from hookrun.events.metrics import KAFKA_ACK_SECONDS, exposition

log = logging.getLogger("hookrun.gateway")

LAUNCHES = Counter(
    "hookrun_launches",
    "Launch requests, by trigger (_unknown: not in the config), outcome (accepted, rejected,"
    " duplicate, filtered, rate_limited, unavailable) and, for rejections, reason",
    ["trigger", "outcome", "reason"],
)
#: The trigger label of ids the config does not have.
UNKNOWN = "_unknown"

_ACK = KAFKA_ACK_SECONDS.labels("launch")
_ACK_TOGETHER = KAFKA_ACK_SECONDS.labels("launch_transaction")


def reason_kind(reason: str) -> str:
    """The bounded kind of a rejection's reason (handlers.reject's texts)."""
    if reason == "unknown trigger":
        return "unknown_trigger"
    if reason == "trigger is disabled":
        return "disabled"
    if reason.startswith("conditions["):
        return "condition_failed"
    if reason.startswith("JSON body nests"):
        return "too_deep"
    if reason == "body too large":
        return "body_too_large"
    return "other"


class LaunchCounter:
    """Counts launches; ``triggers`` are the configured ids (the others count as ``_unknown``)."""

    def __init__(self, triggers: Container[str]) -> None:
        self._triggers = triggers
        self._children: dict[tuple[str, str, str], Counter] = {}

    def count(self, trigger_id: str, outcome: str, reason: str = "") -> None:
        trigger = trigger_id if trigger_id in self._triggers else UNKNOWN
        key = (trigger, outcome, reason)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = LAUNCHES.labels(trigger, outcome, reason)
        child.inc()

    def accepted(self, trigger_id: str, run_id: str, ack_s: float, together: bool) -> None:
        """An acknowledged launch: counted, its acknowledgement timed, logged at INFO (one line
        per authenticated launch, like an access log)."""
        self.count(trigger_id, "accepted")
        (_ACK_TOGETHER if together else _ACK).observe(ack_s)
        if log.isEnabledFor(logging.INFO):
            log.info(
                "launch of %s accepted: run %s",
                trigger_id,
                run_id,
                extra={"run_id": run_id, "trigger_id": trigger_id},
            )

    def refused(self, trigger_id: str, outcome: str, reason: str, run_id: str | None) -> None:
        """A launch that started no run (rejected, duplicate, filtered, ...), logged at DEBUG:
        the trigger log keeps the reasons, and anyone can send a flood of them."""
        self.count(trigger_id, outcome, reason_kind(reason) if outcome == "rejected" else "")
        if log.isEnabledFor(logging.DEBUG):
            known = trigger_id if trigger_id in self._triggers else UNKNOWN
            log.debug(
                "launch of %s %s: %s",
                known,
                outcome,
                reason,
                extra={"run_id": run_id, "trigger_id": known},
            )


async def serve_metrics(request: Request) -> Response:
    """``GET /metrics``: every metric of the process, in Prometheus' text format."""
    body, content_type = exposition()
    return Response(body, media_type=content_type)
