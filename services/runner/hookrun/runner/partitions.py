"""Owned partitions: replay state, the low watermark in each commit, the rebalance listener."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from aiokafka import ConsumerRebalanceListener, TopicPartition

_WATERMARK = "lw="


def encode_watermark(offset: int) -> str:
    return f"{_WATERMARK}{offset}"


def decode_watermark(metadata: str | None, committed: int) -> int:
    """The replay start stored with a commit; the committed offset if there is none."""
    if metadata and metadata.startswith(_WATERMARK):
        with contextlib.suppress(ValueError):
            return min(int(metadata[len(_WATERMARK) :]), committed)
    return committed


#: How often a replay reads a partition again after a gap before it takes the gap as real.
MAX_REPLAY_REREADS = 3


@dataclass
class PartitionState:
    """One owned partition: replaying (rebuilding state, no side effects) until replay_end."""

    tp: TopicPartition
    position: int
    replay_end: int
    live: bool
    last_commit: tuple[int, int] | None = None
    assigned_at: float = field(default_factory=time.monotonic)
    #: Times the replay met a gap and read the partition again from its position.
    rereads: int = 0


class Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    """Hands partition changes to the runner: it replays what it gains, forgets what it loses."""

    def __init__(
        self,
        assigned: Callable[[Iterable[TopicPartition]], Awaitable[None]],
        revoked: Callable[[Iterable[TopicPartition]], Awaitable[None]],
    ) -> None:
        self._assigned = assigned
        self._revoked = revoked

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self._revoked(revoked)

    async def on_partitions_assigned(self, assigned: Any) -> None:
        await self._assigned(assigned)
