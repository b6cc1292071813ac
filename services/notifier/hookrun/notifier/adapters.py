"""The notifier's I/O: the HTTP sender (one guarded transport per subscription) and its Fake twin."""

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


#: The headers httpx.AsyncClient would add; the sender talks to the transport directly.
DEFAULT_HEADERS = {
    "accept": "*/*",
    "accept-encoding": "gzip, deflate",
    "connection": "keep-alive",
    "user-agent": f"python-httpx/{httpx.__version__}",
}


class HttpSender:
    """Sender over httpx with the SSRF guard; each subscription gets its own transport and pool.

    Separate pools mean a subscriber that hangs holds only its own connections, never the
    slots another subscription needs. Requests go straight to the transport: the client's
    cookie jar, auth and redirect layers are not wanted here (redirects are never followed,
    a redirect could point anywhere, past the guard's intent) and cost a third of an attempt.
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
        self._timeouts = httpx.Timeout(timeout_s).as_dict()
        self._allow_private = allow_private
        self._concurrency = concurrency
        self._resolver = resolver
        self._transports: dict[str, httpx.AsyncBaseTransport] = {}

    def _transport(self, subscription_id: str) -> httpx.AsyncBaseTransport:
        transport = self._transports.get(subscription_id)
        if transport is None:
            limits = httpx.Limits(
                max_connections=self._concurrency,
                max_keepalive_connections=self._concurrency,
                keepalive_expiry=30,
            )
            transport = guarded_transport(
                self._resolver, allow_private=self._allow_private, limits=limits
            )
            self._transports[subscription_id] = transport
        return transport

    async def _post(
        self, subscription_id: str, url: str, body: bytes, headers: Mapping[str, str]
    ) -> httpx.Response:
        request = httpx.Request(
            "POST",
            url,
            content=body,
            headers={**DEFAULT_HEADERS, **headers},
            extensions={"timeout": self._timeouts},
        )
        response = await self._transport(subscription_id).handle_async_request(request)
        response.request = request
        try:
            await response.aread()
        finally:
            await response.aclose()
        return response

    async def send(
        self, subscription_id: str, url: str, body: bytes, headers: Mapping[str, str]
    ) -> SendResult:
        started = time.perf_counter()

        def elapsed() -> int:
            return int((time.perf_counter() - started) * 1000)

        try:
            # httpx's timeout is per phase; the overall bound keeps a trickling answer in check.
            async with asyncio.timeout(self._timeout_s):
                response = await self._post(subscription_id, url, body, headers)
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
        for transport in self._transports.values():
            await transport.aclose()


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
