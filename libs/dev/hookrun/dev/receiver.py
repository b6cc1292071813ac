"""Demo completion-webhook receiver: verifies Standard Webhooks signatures, prints each run.

``python -m hookrun.dev.receiver`` listens on 127.0.0.1:$HOOKRUN_DEMO_RECEIVER_PORT (8090) with the
secret $HOOKRUN_DEMO_WHSEC (the default of examples/hookrun.yaml). Tests reuse :class:`Receiver`
as a recording subscriber whose answers they script.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

DEFAULT_WHSEC = "whsec_m387VIn70zBpHcnprjSLBgLoXDRUXlfM"


@dataclass(frozen=True)
class Received:
    """One request as the receiver saw it."""

    path: str
    headers: dict[str, str]
    body: bytes
    at: float
    verified: bool

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass(frozen=True)
class Answer:
    """What to answer: status, extra headers, body, and how long to stall first."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b"ok"
    delay_s: float = 0.0


Responder = Callable[[Received, int], Answer]


class _Server(ThreadingHTTPServer):
    request_queue_size = 128


def _default(request: Received, count: int) -> Answer:
    return Answer(200) if request.verified else Answer(401, body=b"bad signature")


class BackgroundServer:
    """An HTTP server that serves from a daemon thread between :meth:`start` and :meth:`stop`."""

    _server: ThreadingHTTPServer
    _thread: threading.Thread | None = None

    def start(self) -> Self:
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class Receiver(BackgroundServer):
    """A threaded HTTP server on 127.0.0.1 that records requests and answers via ``respond``.

    ``respond(request, n)`` gets the request and how many requests came to that path before it.
    """

    def __init__(
        self,
        secrets: list[str] | None = None,
        *,
        port: int = 0,
        respond: Responder = _default,
        on_request: Callable[[Received], None] | None = None,
    ) -> None:
        from standardwebhooks import Webhook  # a dev dependency, only needed when receiving

        self._hooks = [Webhook(s) for s in (secrets or [DEFAULT_WHSEC])]
        self.requests: list[Received] = []
        self._lock = threading.Lock()
        self._respond = respond
        self._on_request = on_request
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, like a real receiver

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length)
                headers = {k.lower(): v for k, v in self.headers.items()}
                request = Received(
                    self.path, headers, body, time.time(), receiver.verify(headers, body)
                )
                with receiver._lock:
                    count = sum(1 for r in receiver.requests if r.path == self.path)
                    receiver.requests.append(request)
                if receiver._on_request is not None:
                    receiver._on_request(request)
                answer = receiver._respond(request, count)
                if answer.delay_s:
                    time.sleep(answer.delay_s)
                try:
                    self.send_response(answer.status)
                    for name, value in answer.headers.items():
                        self.send_header(name, value)
                    self.send_header("content-length", str(len(answer.body)))
                    self.end_headers()
                    self.wfile.write(answer.body)
                except OSError:
                    pass  # the notifier gave up waiting

            def log_message(self, format: str, *args: Any) -> None:
                pass

        # The default listen backlog (5) drops SYNs under a burst of new connections, which
        # shows up as 1 s connect retries; a real receiver has a deep backlog.
        self._server = _Server(("127.0.0.1", port), Handler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])

    def url(self, path: str = "/hooks") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def verify(self, headers: dict[str, str], body: bytes) -> bool:
        """True when any configured secret verifies the Standard Webhooks signature."""
        for hook in self._hooks:
            try:
                hook.verify(body, headers, json_parse=False)
                return True
            except Exception:  # standardwebhooks raises several types for a bad signature
                continue
        return False

    def on(self, path: str) -> list[Received]:
        with self._lock:
            return [r for r in self.requests if r.path == path]


def _print(request: Received) -> None:
    """One line per notification (what `make run` echoes), then the body for the log."""
    if not request.verified:
        print(f"REJECTED {request.path}: signature did not verify", flush=True)
        return
    doc = request.json()
    print(
        f"run {doc.get('id')} {doc.get('status')} in {doc.get('executionDurationInMs')} ms,"
        f" signature verified (webhook-id {request.headers.get('webhook-id')})",
        flush=True,
    )
    print(json.dumps(doc, indent=2), flush=True)


def main() -> int:
    port = int(os.environ.get("HOOKRUN_DEMO_RECEIVER_PORT", "8090"))
    secret = os.environ.get("HOOKRUN_DEMO_WHSEC", DEFAULT_WHSEC)
    receiver = Receiver([secret], port=port, on_request=_print)
    print(f"demo receiver listening on {receiver.url()}", flush=True)
    try:
        receiver._server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        receiver._server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
