"""Throttling of wrong admin tokens per client address (docs/security.md, decision 0063).

The admin API's bearer check and the dashboard's sign-in compare a guess with
HOOKRUN_ADMIN_TOKEN. Each client address (an IPv6 one by its /64) may make ``max_failures``
wrong guesses in a window of ``window_s`` seconds that starts at its first one; past that, its
attempts are refused (429) without the token being compared until the window ends. Other
addresses are never affected, so a guesser cannot lock the operator out.
"""

from __future__ import annotations

import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from hookrun.status.metrics import ADMIN_AUTH_FAILURES

log = logging.getLogger(__name__)

#: Wrong tokens one address may send per window (HOOKRUN_ADMIN_MAX_FAILURES).
MAX_FAILURES = 10
#: The window's length in seconds (HOOKRUN_ADMIN_FAILURE_WINDOW_S).
WINDOW_S = 60.0
#: Addresses remembered at once; past it the one whose window began first is forgotten.
MAX_ADDRESSES = 10_000

#: Where the guess was made: the admin API's bearer token or the dashboard's sign-in.
Kind = Literal["api", "signin"]


@dataclass
class _Window:
    started: float
    failures: int = 0


class AuthThrottle:
    """Counts wrong admin tokens per address and says how long a throttled one must wait."""

    def __init__(
        self,
        max_failures: int = MAX_FAILURES,
        window_s: float = WINDOW_S,
        *,
        max_addresses: int = MAX_ADDRESSES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        # Settings admits only positive numbers (PositiveInt, PositiveFloat).
        self.max_failures = max_failures
        self.window_s = window_s
        self.max_addresses = max_addresses
        self._clock = clock
        # In the order the windows began (a new window goes to the end), so the first entries
        # are those that end first.
        self._windows: OrderedDict[str, _Window] = OrderedDict()
        self._full_warned_at = -math.inf

    def __len__(self) -> int:
        return len(self._windows)

    def retry_after(self, address: str, kind: Kind) -> int | None:
        """Seconds until ``address`` may try again (at least 1), or None if it may now.

        A refused attempt is counted in the metric; it does not lengthen the window.
        """
        now = self._clock()
        window = self._live(address, now)
        if window is None or window.failures < self.max_failures:
            return None
        ADMIN_AUTH_FAILURES.labels(kind=kind, throttled="true").inc()
        return max(1, math.ceil(window.started + self.window_s - now))

    def failed(self, address: str, kind: Kind) -> None:
        """Count a wrong token from ``address``; the first of a window and the one that reaches
        the limit are logged, naming the address."""
        ADMIN_AUTH_FAILURES.labels(kind=kind, throttled="false").inc()
        now = self._clock()
        window = self._live(address, now)
        if window is None:
            self._make_room(now)
            window = self._windows[address] = _Window(now)
        window.failures += 1
        if window.failures == 1:
            log.warning(
                "wrong admin token from %s (%s); after %d in %g s its attempts get 429",
                address,
                kind,
                self.max_failures,
                self.window_s,
            )
        if window.failures == self.max_failures:
            log.warning(
                "%d wrong admin tokens from %s within %g s; its attempts get 429 for %d s",
                window.failures,
                address,
                self.window_s,
                max(1, math.ceil(window.started + self.window_s - now)),
            )

    def _live(self, address: str, now: float) -> _Window | None:
        window = self._windows.get(address)
        if window is not None and now >= window.started + self.window_s:
            del self._windows[address]
            return None
        return window

    def _make_room(self, now: float) -> None:
        """Drop ended windows; at the cap, also the one that began first (it ends first)."""
        while self._windows:
            _, first = next(iter(self._windows.items()))
            if now < first.started + self.window_s:
                break
            self._windows.popitem(last=False)
        if len(self._windows) < self.max_addresses:
            return
        self._windows.popitem(last=False)
        if now - self._full_warned_at >= self.window_s:
            self._full_warned_at = now
            log.warning(
                "wrong admin tokens from more than %d addresses within %g s: the address whose"
                " window began first is forgotten for each new one",
                self.max_addresses,
                self.window_s,
            )
