"""The notifier's I/O: the HTTP sender (an aiohttp session per subscription) and its Fake twin."""

from __future__ import annotations

import asyncio
import email.utils
import re
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import chain
from typing import Protocol

import aiohttp
import certifi
from aiohttp.helpers import is_ip_address
from yarl import URL

from hookrun.notifier.ssrf import (
    Resolver,
    TargetRefused,
    TargetUnresolved,
    VettedResolver,
    system_resolver,
    vet,
)

EXCERPT_CHARS = 500
#: Longest body read; a longer one is cut there and its connection closed, not drained.
MAX_BODY_BYTES = 1024 * 1024
#: Body bytes kept for the response excerpt (500 characters of UTF-8 fit in 2,000 bytes).
KEPT_BODY_BYTES = 2048

#: What may not be sent in a header: a line break or NUL (it could split the request), non-ASCII.
_UNSENDABLE = re.compile(r"[\r\n\0]|[^\x00-\x7f]")


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
    """Sender with the SSRF guard; each subscription gets its own aiohttp session.

    Separate sessions (each with its own connector) mean a subscriber that hangs holds only its
    own connections, never the slots another subscription needs: at most ``concurrency``
    connections per subscription, kept alive ``keepalive_expiry_s``. Names resolve only
    through :class:`VettedResolver`; a host aiohttp takes for an address (it never resolves
    those) is vetted here, once per URL. Redirects are never followed (a redirect could point
    anywhere, past the guard's intent), cookies never kept, answers never decompressed.
    """

    def __init__(
        self,
        *,
        timeout_s: float,
        allow_private: bool,
        concurrency: int,
        resolver: Resolver = system_resolver,
        keepalive_expiry_s: float = 30.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._timeout_s = timeout_s
        self._allow_private = allow_private
        self._concurrency = concurrency
        self._resolver = VettedResolver(resolver, allow_private=allow_private)
        self._keepalive_expiry_s = keepalive_expiry_s
        self._sessions: dict[str, aiohttp.ClientSession] = {}
        #: url -> (the URL to request, the ssl argument for it), or why it may not be sent.
        self._targets: dict[str, tuple[URL, ssl.SSLContext | bool] | str] = {}
        self._ssl = ssl_context

    def _ssl_context(self) -> ssl.SSLContext:
        # Made on the first https target only (loading the CA bundle costs CPU that a notifier
        # with http targets only never needs), and shared by every subscription: certifi's CAs,
        # hostname and chain verified.
        if self._ssl is None:
            self._ssl = ssl.create_default_context(cafile=certifi.where())
        return self._ssl

    def _session(self, subscription_id: str) -> aiohttp.ClientSession:
        session = self._sessions.get(subscription_id)
        if session is None:
            connector = aiohttp.TCPConnector(
                limit=self._concurrency,
                limit_per_host=0,
                keepalive_timeout=self._keepalive_expiry_s,
                resolver=self._resolver,
            )
            session = self._sessions[subscription_id] = aiohttp.ClientSession(
                connector=connector,
                # One bound for the whole attempt is ours (asyncio.timeout in send).
                timeout=aiohttp.ClientTimeout(total=None),
                cookie_jar=aiohttp.DummyCookieJar(),
                skip_auto_headers=("Accept-Encoding",),
                auto_decompress=False,
                trust_env=False,
            )
        return session

    async def _target(self, url: str) -> tuple[URL, ssl.SSLContext | bool] | str:
        target = self._targets.get(url)
        if target is None:
            target = await self._parse(url)
            if len(self._targets) > 10_000:
                self._targets.clear()
            self._targets[url] = target
        return target

    async def _parse(self, url: str) -> tuple[URL, ssl.SSLContext | bool] | str:
        try:
            parsed = URL(url)
            host, port = parsed.raw_host, parsed.port
        except (ValueError, TypeError):
            return "invalid URL"  # the URL itself is not repeated: it can hold a secret
        if parsed.scheme not in ("http", "https") or not host or port is None:
            return "invalid URL: not an http:// or https:// URL with a host"
        if is_ip_address(host):
            # aiohttp connects to what it takes for an address without its resolver: vetted
            # here. Only canonical forms pass (aiohttp refuses 127.1, 2130706433 ... too).
            try:
                await vet(host, port, _no_lookup, allow_private=self._allow_private)
            except TargetRefused as exc:
                return str(exc)
            except TargetUnresolved:
                return f"invalid URL: {host!r} is not a canonical address"
        # Credentials in the URL are not sent (as before aiohttp); headers carry any auth.
        return parsed.with_user(None), self._ssl_context() if parsed.scheme == "https" else True

    async def send(
        self, subscription_id: str, url: str, body: bytes, headers: Mapping[str, str]
    ) -> SendResult:
        started = time.perf_counter()

        def elapsed() -> int:
            return int((time.perf_counter() - started) * 1000)

        target = await self._target(url)
        if isinstance(target, str):
            # Never sent anywhere: final, not retried.
            return SendResult(None, elapsed(), error=target, refused=True)
        if _UNSENDABLE.search("".join(chain.from_iterable(headers.items()))):
            # (a value from an ${env:} reference is not checked before; aiohttp would raise)
            name = next(n for n, v in headers.items() if _UNSENDABLE.search(n + v))
            return SendResult(None, elapsed(), error=f"ProtocolError: invalid header {name!r}")
        target_url, ssl_arg = target
        try:
            # One bound for the whole attempt: connecting, writing, and a trickling answer.
            async with asyncio.timeout(self._timeout_s):
                async with self._session(subscription_id).post(
                    target_url,
                    data=body,
                    headers={**DEFAULT_HEADERS, **headers},
                    allow_redirects=False,
                    ssl=ssl_arg,
                ) as response:
                    excerpt = await _read_excerpt(response)
        except TargetRefused as exc:
            return SendResult(None, elapsed(), error=str(exc), refused=True)
        except TimeoutError:
            return SendResult(None, elapsed(), error=f"timed out after {self._timeout_s}s")
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.os_error, TargetUnresolved):
                error = f"TargetUnresolved: {exc.os_error}"
            else:
                error = f"ConnectError: {exc}"
            return SendResult(None, elapsed(), error=error[:EXCERPT_CHARS])
        except aiohttp.InvalidURL:
            # Its str() is the URL, which may hold the subscriber's secret.
            return SendResult(None, elapsed(), error="invalid URL", refused=True)
        except aiohttp.ClientResponseError as exc:
            # Its str() holds the URL, which may hold the subscriber's secret: the message only.
            error = f"ProtocolError: {exc.message}"
            return SendResult(None, elapsed(), error=error[:EXCERPT_CHARS])
        except (aiohttp.ClientError, OSError) as exc:
            error = f"{type(exc).__name__}: {exc}"
            return SendResult(None, elapsed(), error=error[:EXCERPT_CHARS])
        return SendResult(
            response.status,
            elapsed(),
            excerpt=excerpt,
            retry_after_s=parse_retry_after(response.headers.get("retry-after")),
        )

    async def close(self) -> None:
        sessions, self._sessions = self._sessions, {}
        for session in sessions.values():
            await session.close()


async def _no_lookup(host: str, port: int) -> list[str]:
    raise OSError("not an address")


async def _read_excerpt(response: aiohttp.ClientResponse) -> str:
    """Read the body, keeping its first :data:`KEPT_BODY_BYTES`; past :data:`MAX_BODY_BYTES`
    it is cut there and the connection closed (a body read to its end leaves it reusable)."""
    kept = bytearray()
    read = 0
    while chunk := await response.content.readany():
        if len(kept) < KEPT_BODY_BYTES:
            kept += chunk[: KEPT_BODY_BYTES - len(kept)]
        read += len(chunk)
        if read > MAX_BODY_BYTES:
            response.close()
            break
    return kept.decode("utf-8", errors="replace")[:EXCERPT_CHARS]


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
