"""A small service for the consume loop's tests: it notes what it is dispatched, per partition."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from aiokafka import TopicPartition

from hookrun.events import topics
from hookrun.events.base import Event
from hookrun.events.clients import Commit
from hookrun.events.consumer import ConsumeLoop
from hookrun.events.maps import EventMap
from hookrun.events.notifications import DeliveryExhausted, RedeliveryRequested
from hookrun.events.runs import RunCancelRequested
from hookrun.events.service import Partition, Service

#: Handles redelivery requests and exhaustions; ignores cancellations.
EVENTS = EventMap(
    "tally",
    frozenset({topics.RUNS}),
    {RedeliveryRequested: "note", DeliveryExhausted: "note"},
    frozenset({RunCancelRequested}),
)


@dataclass
class Sheet:
    """What one partition's records came to."""

    #: (offset, run id, live when dispatched) of every event dispatched.
    seen: list[tuple[int, str, bool]] = field(default_factory=list)
    #: Offsets of requests whose work is not done: the commit must not pass them.
    pending: set[int] = field(default_factory=set)
    live: bool = False


class Tally(Service[Sheet]):
    """Notes every handled event; a request asking for ``work`` stays pending until done.

    Commits the low watermark of the pending work with ``lw=<offset>`` as metadata, and starts
    a replay there, as the runner does.
    """

    def __init__(self) -> None:
        self.live: list[TopicPartition] = []
        self.revoked_parts: list[TopicPartition] = []
        self.starts: dict[TopicPartition, Commit | None] = {}
        self.batches = 0
        self.swept = 0
        self.drained = False
        self.room_left: int | None = None
        #: Events a handler returns (the loop publishes them).
        self.replies: list[Event] = []

    def open(self, tp: TopicPartition) -> Sheet:
        return Sheet()

    async def replay_start(self, tp: TopicPartition, committed: Commit | None) -> int | None:
        self.starts[tp] = committed
        if committed is not None and committed.metadata.startswith("lw="):
            return int(committed.metadata[3:])
        return None if committed is None else committed.offset

    async def went_live(self, part: Partition[Sheet]) -> None:
        part.state.live = True
        self.live.append(part.tp)

    async def handled(self, parts: list[Partition[Sheet]]) -> None:
        self.batches += 1

    async def revoked(self, part: Partition[Sheet]) -> None:
        self.revoked_parts.append(part.tp)

    def safe(self, part: Partition[Sheet]) -> Commit:
        low = min(part.state.pending, default=part.position)
        return Commit(part.position, f"lw={low}")

    async def room(self) -> int | None:
        if self.room_left == 0:
            await asyncio.sleep(0.01)
        return self.room_left

    async def sweep(self) -> None:
        self.swept += 1

    async def drain(self) -> None:
        self.drained = True

    async def note(self, event: Event, offset: int, sheet: Sheet) -> list[Event]:
        assert isinstance(event, RedeliveryRequested | DeliveryExhausted)
        sheet.seen.append((offset, event.run_id, sheet.live))
        if isinstance(event, RedeliveryRequested) and event.requested_by == "work":
            sheet.pending.add(offset)
        if isinstance(event, RedeliveryRequested) and event.requested_by == "reply":
            reply = DeliveryExhausted(
                run_id=event.run_id, message_id="m", subscription_id="s", attempts=1
            )
            self.replies.append(reply)
            return [reply]
        return []


def tally_loop(tally: Tally, consumer, publisher, **options) -> ConsumeLoop[Sheet]:
    handlers = {RedeliveryRequested: [tally.note], DeliveryExhausted: [tally.note]}
    options.setdefault("fetch_timeout_ms", 10)
    return ConsumeLoop(
        tally,
        consumer=consumer,
        publisher=publisher,
        topics=[topics.RUNS],
        events=EVENTS,
        handlers=handlers,
        **options,
    )


def request(run_id: str, by: str = "admin") -> RedeliveryRequested:
    return RedeliveryRequested(run_id=run_id, requested_by=by)


async def steps_until(loop: ConsumeLoop, predicate, timeout_s: float = 3.0) -> None:
    """Run the loop's steps until ``predicate()`` holds."""
    async with asyncio.timeout(timeout_s):
        while not predicate():
            await loop.step()
