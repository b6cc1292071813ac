"""Events about triggers that belong to no run: the trigger log and the inbound dedupe records."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from hookrun.events import topics
from hookrun.events.base import Event
from hookrun.events.limits import BoundedText
from hookrun.events.registry import register


@register(
    "hookrun.trigger.logged",
    version=1,
    topic=topics.TRIGGERS,
    producers=("gateway",),
    consumers=("status",),
)
class TriggerLogged(Event):
    """A launch the gateway answered without starting a run: rejected, a redelivery, left out
    by the trigger's filter (``filtered``) or past its rate limit (``rate_limited``).

    Accepted launches are in the trigger log too: their entry is the run's TriggerLaunched on
    ``hookrun.runs``. The key is the trigger id as requested (it may name no trigger). Past a
    rate, the launches of one source are counted rather than logged one by one: one entry then
    stands for ``count`` of them, the last one's details, and says so in its reason.
    """

    key_field = "trigger_id"

    trigger_id: str
    outcome: Literal["rejected", "duplicate", "filtered", "rate_limited"]
    reason: BoundedText
    status_code: int
    method: str
    remote_addr: str | None = None
    content_length: int = 0
    delivery_id: str | None = None
    #: For a duplicate: the run the first delivery started.
    run_id: str | None = None
    #: How many launches the entry stands for: more than 1 for a sampled source's summary.
    count: int = Field(default=1, ge=1)


@register(
    "hookrun.inbound.recorded",
    version=1,
    topic=topics.INBOUND_DELIVERIES,
    producers=("gateway",),
    consumers=("gateway",),
)
class InboundDeliveryRecorded(Event):
    """A provider delivery id was accepted and started ``run_id``; redeliveries map to it."""

    key_field = "dedupe_key"

    trigger_id: str
    delivery_id: str
    run_id: str

    @property
    def dedupe_key(self) -> str:
        """``<trigger id>/<delivery id>``: trigger ids cannot contain a slash."""
        return f"{self.trigger_id}/{self.delivery_id}"
