"""The admin API over HTTP, with one clear error per way a request can fail."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import orjson


class CliError(Exception):
    """A failure to report as one line on stderr, with a non-zero exit status."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


def _reason(response: httpx.Response) -> str:
    """The ``error`` of a hookrun error body, else the start of the body, else the status."""
    try:
        body = response.json()
    except ValueError:
        text = response.text.strip()
        return text[:200] if text else response.reason_phrase
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return str(body["error"])
    return response.text[:200]


@dataclass(frozen=True)
class SseEvent:
    """One server-sent event: its ``event`` name, ``data`` text and ``id`` (None if none)."""

    event: str
    data: str
    id: str | None


def sse_events(lines: Iterator[str]) -> Iterator[SseEvent]:
    """Server-sent events from a text/event-stream's lines (comments and retry skipped)."""
    event, last_id = "message", None
    data: list[str] = []
    for line in lines:
        if not line:
            if data:
                yield SseEvent(event, "\n".join(data), last_id)
            event, data = "message", []
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "event":
            event = value
        elif field == "data":
            data.append(value)
        elif field == "id":
            last_id = value


class Api:
    """``HOOKRUN_URL``'s HTTP API; admin calls carry ``HOOKRUN_ADMIN_TOKEN``."""

    def __init__(self, url: str, token: str | None, timeout_s: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.http = httpx.Client(
            base_url=self.url, timeout=timeout_s, headers={"User-Agent": "hookrun-cli"}
        )

    def close(self) -> None:
        self.http.close()

    def _headers(self) -> dict[str, str]:
        if not self.token:
            raise CliError("no admin token: set HOOKRUN_ADMIN_TOKEN or pass --token")
        return {"Authorization": f"Bearer {self.token}"}

    def send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """The response to a request, whatever its status; CliError when nothing answered."""
        try:
            return self.http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise self._unreachable(exc, self.http.timeout.read) from None

    def _unreachable(self, exc: httpx.TransportError, timeout_s: float | None) -> CliError:
        if isinstance(exc, httpx.TimeoutException):
            return CliError(f"{self.url} did not answer within {timeout_s:g}s (is hookrun up?)")
        why = str(exc) or type(exc).__name__
        return CliError(f"cannot reach hookrun at {self.url}: {why} (is it running?)")

    def admin(
        self, method: str, path: str, *, what: str | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        """The JSON answer of an admin call; CliError for every error answer.

        ``what`` names the object of ``path`` (``run 01a24add...``) for the 404 message.
        """
        response = self.send(method, f"/api/v1{path}", headers=self._headers(), **kwargs)
        self._raise_for(response, what)
        body: dict[str, Any] = orjson.loads(response.content)
        return body

    def _raise_for(self, response: httpx.Response, what: str | None) -> None:
        status = response.status_code
        if status < 400:
            return
        if status == 401:
            raise CliError(
                f"{self.url} refused the admin token (401): check HOOKRUN_ADMIN_TOKEN or --token"
            )
        if status == 404 and what is not None:
            raise CliError(f"{what} not found (404)")
        if status == 503 and _reason(response) == "admin API disabled":
            raise CliError(f"{self.url}: the admin API is disabled (HOOKRUN_ADMIN_TOKEN unset)")
        raise CliError(f"{self.url} answered {status}: {_reason(response)}")

    def stream(self, path: str, params: dict[str, str], last_id: str | None) -> Iterator[SseEvent]:
        """The server-sent events of an admin stream, from after ``last_id``."""
        headers = self._headers() | {"Accept": "text/event-stream"}
        if last_id is not None:
            headers["Last-Event-ID"] = last_id
        timeout = httpx.Timeout(self.http.timeout.connect, read=60.0)
        try:
            with self.http.stream(
                "GET", f"/api/v1{path}", params=params, headers=headers, timeout=timeout
            ) as response:
                if response.status_code >= 400:
                    response.read()
                    self._raise_for(response, None)
                yield from sse_events(response.iter_lines())
        except httpx.TransportError as exc:
            raise self._unreachable(exc, timeout.read) from None
