"""The notifier's I/O: the HTTP sender (one guarded pool per subscription) and its Fake twin."""

from __future__ import annotations

import asyncio
import email.utils
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

import httpx

from hookrun.notifier.pool import HttpError, Pool, Target, request_bytes
from hookrun.notifier.ssrf import Resolver, TargetRefused, system_resolver

EXCERPT_CHARS = 500


@dataclass(frozen=True)
class SendResult:
    """What one HTTP attempt came to."""

    status_code: int | None
    duration_ms: int
    excerpt: str = ""
    error: str | None = None
    refused: bool = False
    #: Seconds the subscriber asked us to wait (Retry-After), if it did.
    retry_after_s: float | None = None


class Sender(Protocol):
    """POSTs one signed body to one subscription."""

    async def send(
        self, subscription_id: str, url: str, body: bytes, headers: Mapping[str, str]
    ) -> SendResult: ...

    async def close(self) -> None: ...


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date); None if absent/bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    base = now if now is not None else datetime.now(UTC).timestamp()
    return max(0.0, when.timestamp() - base)


#: Headers of every attempt besides the signed ones (no accept-encoding: answers come as is).
DEFAULT_HEADERS = {
    "accept": "*/*",
    "user-agent": "hookrun-notifier",
}


class HttpSender:
    """Sender with the SSRF guard; each subscription gets its own connection pool.

    Separate pools mean a subscriber that hangs holds only its own connections, never the
    slots another subscription needs. Redirects are never followed (a redirect could point
    anywhere, past the guard's intent). The client is :mod:`hookrun.notifier.pool`: httpx's
    layers cost several times the rest of an attempt (docs/notifier.md, Performance).
    """

    def __init__(
        self,
        *,
        timeout_s: float,
        allow_private: bool,
        concurrency: int,
        resolver: Resolver = system_resolver,
        keepalive_expiry_s: float = 30.0,
    ) -> None:
        self._timeout_s = timeout_s
        self._allow_private = allow_private
        self._concurrency = concurrency
        self._resolver = resolver
        self._keepalive_expiry_s = keepalive_expiry_s
        self._pools: dict[str, Pool] = {}
        self._targets: dict[str, Target | httpx.InvalidURL] = {}
        self._ssl: ssl.SSLContext | None = None

    def _ssl_context(self) -> ssl.SSLContext:
        # Made on the first https target only (loading the CA bundle costs CPU that a notifier
        # with http targets only never needs), and shared by every subscription. Verification
        # and CAs as httpx's defaults.
        if self._ssl is None:
            self._ssl = httpx.create_ssl_context(trust_env=False)
        return self._ssl

    def _pool(self, subscription_id: str) -> Pool:
        pool = self._pools.get(subscription_id)
        if pool is None:
            pool = self._pools[subscription_id] = Pool(
                max_connections=self._concurrency,
                keepalive_expiry=self._keepalive_expiry_s,
                resolver=self._resolver,
                allow_private=self._allow_private,
                ssl_context=self._ssl_context,
            )
        return pool

    def _target(self, url: str) -> Target:
        target = self._targets.get(url)
        if target is None:
            try:
                target = Target.parse(url)
            except httpx.InvalidURL as exc:
                target = exc
            if len(self._targets) > 10_000:
                self._targets.clear()
            self._targets[url] = target
        if isinstance(target, httpx.InvalidURL):
            raise target
        return target

    async def send(
        self, subscription_id: str, url: str, body: bytes, headers: Mapping[str, str]
    ) -> SendResult:
        started = time.perf_counter()

        def elapsed() -> int:
            return int((time.perf_counter() - started) * 1000)

        try:
            target = self._target(url)
            request = request_bytes(target, {**DEFAULT_HEADERS, **headers}, body)
            # One bound for the whole attempt: connecting, writing, and a trickling answer.
            async with asyncio.timeout(self._timeout_s):
                response = await self._pool(subscription_id).request(target, request)
        except TargetRefused as exc:
            return SendResult(None, elapsed(), error=str(exc), refused=True)
        except httpx.InvalidURL as exc:
            # e.g. octal IPv4 forms httpx will not parse: never sent anywhere, so refused.
            return SendResult(None, elapsed(), error=f"invalid URL: {exc}", refused=True)
        except TimeoutError:
            return SendResult(None, elapsed(), error=f"timed out after {self._timeout_s}s")
        except (HttpError, OSError) as exc:
            return SendResult(None, elapsed(), error=f"{type(exc).__name__}: {exc}"[:EXCERPT_CHARS])
        return SendResult(
            response.status,
            elapsed(),
            excerpt=response.text[:EXCERPT_CHARS],
            retry_after_s=parse_retry_after(response.headers.get("retry-after")),
        )

    async def close(self) -> None:
        for pool in self._pools.values():
            await pool.aclose()


class FakeSender:
    """Sender that records every request and answers from ``respond`` (unit tests)."""

    def __init__(
        self, respond: Callable[[str, bytes, Mapping[str, str]], SendResult] | None = None
    ) -> None:
        self.sent: list[tuple[str, str, bytes, dict[str, str]]] = []
        self._respond = respond or (lambda url, body, headers: SendResult(200, 1, "ok"))

    async def send(
        self, subscription_id: str, url: str, body: bytes, headers: Mapping[str, str]
    ) -> SendResult:
        self.sent.append((subscription_id, url, body, dict(headers)))
        return self._respond(url, body, headers)

    async def close(self) -> None:
        pass
