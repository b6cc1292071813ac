"""How the gateway is served: uvicorn's options, and the read deadlines uvicorn lacks."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from hookrun.events import logs
from hookrun.gateway.config import Settings

log = logging.getLogger(__name__)

_TIMED_OUT_BODY = b"Request Timeout"


class ReadDeadlineProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, with a deadline for a request's headers and for its body.

    uvicorn bounds only the idle time between two requests (``timeout_keep_alive``, armed once
    a response is complete): a client that trickles its headers or its body keeps its
    connection, and a place under ``limit_concurrency``, as long as it keeps sending
    (decision 0034). Here the headers must be complete within ``header_timeout_s`` of the
    connection's start (its first request) or of the request's first byte (a later one), and
    the body within ``body_timeout_s`` of the end of the headers. A request that misses its
    deadline gets 408 unless an answer is already under way, and the connection is closed.
    """

    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None
        self._reading_body = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(self.header_timeout_s, reading_body=False)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._deadline is None:  # a later request on a kept-alive connection
            self._arm(self.header_timeout_s, reading_body=False)

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        self._arm(self.body_timeout_s, reading_body=True)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._disarm()

    def _arm(self, timeout_s: float, *, reading_body: bool) -> None:
        self._disarm()
        self._reading_body = reading_body
        self._deadline = self.loop.call_later(timeout_s, self._deadline_missed)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _deadline_missed(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        cycle = self.cycle
        if self._reading_body:
            answering = cycle.response_started
            if not answering:
                # The app is still waiting for the body: it gets a disconnect, and whatever it
                # sends after that is dropped, so the 408 stays the only answer.
                cycle.disconnected = True
                cycle.message_event.set()
        else:
            # Until the headers are complete, self.cycle is the previous request's, if any.
            answering = cycle is not None and not cycle.response_complete
        phase = "body" if self._reading_body else "headers"
        log.info("closed a connection from %s: %s not read in time", _peer(self.client), phase)
        if not answering:
            self.transport.write(self._timed_out_response())
        self.transport.close()

    def _timed_out_response(self) -> bytes:
        lines = [b"HTTP/1.1 408 Request Timeout"]
        lines += [name + b": " + value for name, value in self.server_state.default_headers]
        lines += [
            b"content-type: text/plain; charset=utf-8",
            b"content-length: " + str(len(_TIMED_OUT_BODY)).encode(),
            b"connection: close",
        ]
        return b"\r\n".join(lines) + b"\r\n\r\n" + _TIMED_OUT_BODY


def _peer(client: tuple[str, int] | None) -> str:
    return f"{client[0]}:{client[1]}" if client else "an unknown client"


def protocol(header_timeout_s: float, body_timeout_s: float) -> type[ReadDeadlineProtocol]:
    """The protocol class uvicorn builds each connection with, with these deadlines."""

    class GatewayProtocol(ReadDeadlineProtocol):
        pass

    GatewayProtocol.header_timeout_s = header_timeout_s
    GatewayProtocol.body_timeout_s = body_timeout_s
    return GatewayProtocol


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """The keyword arguments of ``uvicorn.run`` for the gateway, all but the app."""
    return {
        "host": settings.hookrun_host,
        "port": settings.hookrun_port,
        "loop": "uvloop",
        "http": protocol(settings.hookrun_header_timeout_s, settings.hookrun_body_timeout_s),
        # No WebSocket route: an upgrade would hand the connection past the read deadlines.
        "ws": "none",
        # uvicorn counts the connection that asks among those open, so one more lets
        # HOOKRUN_MAX_CONNECTIONS connections be served and answers the next one 503.
        "limit_concurrency": settings.hookrun_max_connections + 1,
        "timeout_keep_alive": settings.hookrun_keep_alive_s,
        "access_log": settings.hookrun_access_log,
        "log_level": logs.level_of(settings.log_level),
        "timeout_graceful_shutdown": 10,
    }
