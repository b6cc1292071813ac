"""The notifier's I/O: the HTTP sender (one guarded client per subscription) and its Fake twin."""

from __future__ import annotations

import asyncio
import email.utils
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

import httpx

from hookrun.notifier.ssrf import Resolver, TargetRefused, guarded_transport, system_resolver

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


class HttpSender:
    """Sender over httpx with the SSRF guard; each subscription gets its own client and pool.

    Separate pools mean a subscriber that hangs holds only its own connections, never the
    slots another subscription needs.
    """

    def __init__(
        self,
        *,
        timeout_s: float,
        allow_private: bool,
        concurrency: int,
        resolver: Resolver = system_resolver,
    ) -> None:
        self._timeout_s = timeout_s
        self._allow_private = allow_private
        self._concurrency = concurrency
        self._resolver = resolver
        self._clients: dict[str, httpx.AsyncClient] = {}

    def _client(self, subscription_id: str) -> httpx.AsyncClient:
        client = self._clients.get(subscription_id)
        if client is None:
            limits = httpx.Limits(
                max_connections=self._concurrency,
                max_keepalive_connections=self._concurrency,
                keepalive_expiry=30,
            )
            client = httpx.AsyncClient(
                transport=guarded_transport(
                    self._resolver, allow_private=self._allow_private, limits=limits
                ),
                timeout=httpx.Timeout(self._timeout_s),
                follow_redirects=False,  # a redirect could point anywhere, past the guard's intent
            )
            self._clients[subscription_id] = client
        return client

    async def send(
        self, subscription_id: str, url: str, body: bytes, headers: Mapping[str, str]
    ) -> SendResult:
        started = time.perf_counter()

        def elapsed() -> int:
            return int((time.perf_counter() - started) * 1000)

        try:
            # httpx's timeout is per phase; the overall bound keeps a trickling answer in check.
            async with asyncio.timeout(self._timeout_s):
                response = await self._client(subscription_id).post(
                    url, content=body, headers=dict(headers)
                )
        except TargetRefused as exc:
            return SendResult(None, elapsed(), error=str(exc), refused=True)
        except httpx.InvalidURL as exc:
            # e.g. octal IPv4 forms httpx will not parse: never sent anywhere, so refused.
            return SendResult(None, elapsed(), error=f"invalid URL: {exc}", refused=True)
        except TimeoutError:
            return SendResult(None, elapsed(), error=f"timed out after {self._timeout_s}s")
        except httpx.TimeoutException as exc:
            return SendResult(None, elapsed(), error=f"timed out: {type(exc).__name__}")
        except httpx.HTTPError as exc:
            return SendResult(None, elapsed(), error=f"{type(exc).__name__}: {exc}"[:EXCERPT_CHARS])
        return SendResult(
            response.status_code,
            elapsed(),
            excerpt=response.text[:EXCERPT_CHARS],
            retry_after_s=parse_retry_after(response.headers.get("retry-after")),
        )

    async def close(self) -> None:
        for client in self._clients.values():
            await client.aclose()


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
