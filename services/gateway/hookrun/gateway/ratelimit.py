"""Per-trigger token buckets: a trigger's rate limit, held by each gateway instance alone."""

from __future__ import annotations

import math

from hookrun.config import RateLimit


class TokenBucket:
    """``capacity`` tokens, refilled at ``rate`` per second; a launch takes one.

    The bucket starts full. Times are from a monotonic clock, in seconds.
    """

    __slots__ = ("capacity", "rate", "tokens", "updated")

    def __init__(self, limit: RateLimit, now: float) -> None:
        self.capacity = float(limit.capacity)
        self.rate = limit.per_second
        self.tokens = self.capacity
        self.updated = now

    def take(self, now: float) -> float:
        """Take a token and return 0, or return the seconds until one is there (none taken)."""
        elapsed = max(0.0, now - self.updated)
        tokens = min(self.capacity, self.tokens + elapsed * self.rate)
        self.updated = now
        if tokens >= 1.0:
            self.tokens = tokens - 1.0
            return 0.0
        self.tokens = tokens
        return (1.0 - tokens) / self.rate


def retry_after(wait_s: float) -> str:
    """``Retry-After`` for a wait: whole seconds, rounded up, at least 1."""
    return str(max(1, math.ceil(wait_s)))
