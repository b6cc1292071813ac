"""What a service plugs into the consume loop (:mod:`hookrun.events.consumer`): its hooks, the
partitions it is given, the handlers of its table and the publisher calls it makes."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from aiokafka import TopicPartition

from hookrun.events.base import Event
from hookrun.events.clients import Commit
from hookrun.events.kafka import RecordSender

S = TypeVar("S")

#: A handler of the table: ``(event, offset, partition state) -> events it caused``. The loop
#: publishes what the handlers of a batch return before it moves on.
Handler = Callable[[Event, int, S], Awaitable[Sequence[Event]]]


class PublisherClient(RecordSender, Protocol):
    """The publisher calls the loop and its services make (:class:`~hookrun.events.kafka.Publisher`'s)."""

    #: The ``source`` it stamps on the events it appends.
    source: str

    @property
    def ready(self) -> bool: ...

    async def publish(self, events: Sequence[Event]) -> None: ...

    async def start(self, *, wait: bool = False) -> None: ...

    async def stop(self) -> None: ...


@dataclass(eq=False)
class Partition(Generic[S]):
    """An assigned partition: the service's state of it, and where the loop stands in it."""

    tp: TopicPartition
    state: S
    #: The next offset to read.
    position: int
    #: The log end at assignment: the partition is replayed (the service acts on nothing)
    #: until the position reaches it.
    replay_end: int
    live: bool = False
    #: The last commit: at assignment the group's, then the loop's own.
    committed: Commit | None = None
    #: Times the replay met a gap and read the partition again from its position.
    rereads: int = 0
    #: True once a record was read since the last seek: only the first record after a seek
    #: can come from a fetch that raced it; later gaps are the log's own (control records).
    settled: bool = False
    assigned_at: float = field(default_factory=time.monotonic)


class Service(Generic[S]):
    """What a service plugs into the loop. Only :meth:`open` must be overridden.

    The hooks but :meth:`room` and :meth:`drain` run under the loop's lock: batches,
    rebalances, sweeps and :meth:`ConsumeLoop.dispatch` never interleave.
    """

    def open(self, tp: TopicPartition) -> S:
        """Return the state of a partition just assigned; the replay rebuilds it."""
        raise NotImplementedError

    async def replay_start(self, tp: TopicPartition, committed: Commit | None) -> int | None:
        """Where the replay of ``tp`` starts, given the group's commit; None: the log start.

        The default resumes at the committed offset. The loop keeps the answer within the log;
        when this raises, the partition waits paused and is asked again at the next step.
        """
        return None if committed is None else committed.offset

    async def take(self, batch: Sequence[tuple[Partition[S], Sequence[Any]]]) -> None:
        """The records of a fetch, undecoded, for a service that has no handler table.

        A projection folds and stores them itself (with the offsets it reached); it may send a
        partition back to an earlier offset with :meth:`ConsumeLoop.seek`.
        """
        raise NotImplementedError

    async def went_live(self, part: Partition[S]) -> None:
        """``part`` is replayed to its end at assignment: act on what its state holds."""

    async def handled(self, parts: Sequence[Partition[S]]) -> None:
        """A batch was dispatched: ``parts`` got records or went live (e.g. schedule work)."""

    async def revoked(self, part: Partition[S]) -> None:
        """``part`` was taken away, its last commit made: stop acting on its state, drop it."""

    def safe(self, part: Partition[S]) -> Commit:
        """What may be committed for the live ``part``: all its effects below are durable.

        The default is the position, for a service whose effects are done once dispatched.
        """
        return Commit(part.position)

    async def room(self) -> int | None:
        """How many records the service can take now; None: no limit, 0: pause every partition.

        When there is no room, wait for some (up to about a second) before answering 0.
        """
        return None

    async def sweep(self) -> None:
        """Periodic work (every ``sweep_every_s`` of the loop), followed by a commit."""

    async def drain(self) -> None:
        """The loop stops: finish or record what is under way (bounded) before the last commit."""
