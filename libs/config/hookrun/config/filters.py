"""Checking a trigger's payload filter against a request whose conditions passed."""

from __future__ import annotations

from hookrun.config.conditions import InboundRequest
from hookrun.config.model import Trigger
from hookrun.events.runs import parse_payload

__all__ = ["filter_miss"]


def filter_miss(trigger: Trigger, request: InboundRequest) -> str | None:
    """Why the request does not pass the trigger's ``filter`` (for the trigger log), or None.

    Every rule of the list must match. Payload paths read the body as a run's payload is read
    (JSON, or a form): a body that is neither has no value at any payload path.
    """
    rules = trigger.filter
    if rules is None:
        return None
    headers = request.headers
    payload = (
        parse_payload(request.body, headers.get("content-type"))
        if trigger._filter_reads_payload
        else None
    )
    for index, rule in enumerate(rules):
        if not rule._test(headers, payload):
            return f"filter[{index}] did not match: {rule.describe()}"
    return None
