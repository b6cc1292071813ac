"""Sampling of the trigger log: a flood of refused launches from one source is counted, not stored.

Anyone can send a request that is refused, so each source may log at most ``limit`` entries of
an outcome (``rejected``, ``duplicate``) per window of ``window_s`` seconds one by one; past
that its launches are counted, and when the window ends one summary entry carries the count and
the last launch's details. A source is the client address (an IPv6 address by its /64, which
one client usually holds whole) and the trigger it named, if that is a configured trigger; the
ids of unknown triggers are the sender's to choose, so they all count as one. Past
``max_sources`` sources in one window, the others share one tally.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Container, Sequence
from dataclasses import dataclass

from hookrun.config.addresses import source_address
from hookrun.events import TriggerLogged

#: Rejections logged one by one per source and window (HOOKRUN_REJECTION_LOG_LIMIT).
DEFAULT_LIMIT = 20
#: The window's length in seconds (HOOKRUN_REJECTION_LOG_WINDOW_S).
DEFAULT_WINDOW_S = 60.0
#: Sources tallied apart in one window; past it they share one tally.
MAX_SOURCES = 1000

#: The tally shared by the sources past ``MAX_SOURCES``.
_OTHERS = "other sources"


@dataclass
class _Tally:
    logged: int = 0
    counted: int = 0
    last: TriggerLogged | None = None


class TriggerLogSampler:
    """Passes trigger-log entries to ``emit``, one by one up to the limit, then as counts.

    ``emit`` appends without waiting (``EventLog.append_soon``). Each window's summaries are
    emitted by a timer on the running event loop when the window ends, and by :meth:`flush`.
    """

    def __init__(
        self,
        emit: Callable[[Sequence[TriggerLogged]], None],
        triggers: Container[str],
        *,
        limit: int = DEFAULT_LIMIT,
        window_s: float = DEFAULT_WINDOW_S,
        max_sources: int = MAX_SOURCES,
    ) -> None:
        if limit < 1 or window_s <= 0 or max_sources < 1:
            raise ValueError("limit and max_sources must be at least 1, window_s above 0")
        self._emit = emit
        self._triggers = triggers
        self._limit = limit
        self._window_s = window_s
        self._max_sources = max_sources
        self._tallies: dict[tuple[str, str, str], _Tally] = {}
        self._timer: asyncio.TimerHandle | None = None

    def offer(self, entry: TriggerLogged) -> None:
        """Log ``entry`` now, or count it in its source's summary when the source is past the limit."""
        trigger = entry.trigger_id if entry.trigger_id in self._triggers else ""
        key = (entry.outcome, source_address(entry.remote_addr), trigger)
        tally = self._tallies.get(key)
        if tally is None:
            if len(self._tallies) >= self._max_sources:
                key = (entry.outcome, _OTHERS, "")
                tally = self._tallies.get(key)
            if tally is None:
                tally = self._tallies[key] = _Tally()
                self._arm()
        if tally.logged < self._limit:
            tally.logged += 1
            self._emit([entry])
            return
        tally.counted += 1
        tally.last = entry

    def flush(self) -> None:
        """End the window: emit a summary per source that was counted, and start afresh."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        tallies, self._tallies = self._tallies, {}
        summaries = [
            _summary(key[1], tally, self._window_s)
            for key, tally in tallies.items()
            if tally.last is not None
        ]
        if summaries:
            self._emit(summaries)

    def _arm(self) -> None:
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._window_s, self.flush)


def _summary(address: str, tally: _Tally, window_s: float) -> TriggerLogged:
    last = tally.last
    assert last is not None
    reason = (
        f"{tally.counted} more {last.outcome} launches from {address} within {window_s:g} s,"
        f" counted, not logged one by one; the last: {last.reason}"
    )
    # A new event (its own id and time), validated, so the reason is cut to its bound.
    fields = last.model_dump(exclude={"event_id", "occurred_at"})
    return TriggerLogged(**(fields | {"reason": reason, "count": tally.counted}))
