"""The live run feed: server-sent events of runs as the projection stores their changes.

Shared by the admin API (``GET /api/v1/runs/stream``, bearer token) and the dashboard
(``GET /ui/runs/stream``, session cookie). Each event is ``event: run`` with one run object of
``GET /api/v1/runs`` as its data, sent whenever an event of that run was stored; its ``id`` is a
position in the runs topic, so a client that reconnects with ``Last-Event-ID`` misses nothing.
"""

from __future__ import annotations

import base64
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson

from hookrun.events import topics
from hookrun.status.handlers import ApiError, Deps
from hookrun.status.store import RunFilter

#: How long the feed waits for the local projection before it looks at the store anyway (another
#: instance may project into a shared PostgreSQL store).
POLL_S = 0.5
#: A comment line this often keeps proxies from closing an idle stream.
KEEPALIVE_S = 15.0
#: What EventSource waits before it reconnects, in milliseconds.
RETRY_MS = 2000


def position(offsets: dict[int, int]) -> str:
    """An event id: the next offset of each partition of the runs topic. The same offsets give
    the same text, however the store ordered them (a rebuilt store answers as the live one)."""
    doc = {str(p): o for p, o in sorted(offsets.items())}
    return base64.urlsafe_b64encode(orjson.dumps(doc)).decode()


async def position_now(deps: Deps) -> str:
    """The feed's position now. Read before a page of runs, it starts a feed where that page was
    read, so a change stored in between is sent rather than missed."""
    return position(await deps.store.offsets(topics.named(topics.RUNS, deps.namespace)))


def parse_position(text: str) -> dict[int, int]:
    """The offsets of an event id from :func:`position`; ApiError 400 on anything else."""
    try:
        doc = orjson.loads(base64.urlsafe_b64decode(text.encode()))
        return {int(p): int(o) for p, o in doc.items()}
    except Exception as exc:
        raise ApiError(400, {"error": "invalid Last-Event-ID"}) from exc


def matches(f: RunFilter, run_id: str | None) -> Callable[[dict[str, Any]], bool]:
    """Whether a run object passes the run list's filter (and is ``run_id``, when given)."""

    def check(run: dict[str, Any]) -> bool:
        return (
            (run_id is None or run["run_id"] == run_id)
            and (f.trigger_id is None or run["trigger_id"] == f.trigger_id)
            and (f.run_status is None or run["status"] == f.run_status)
            and (f.info_status is None or run["info_status"] == f.info_status)
            and (f.since is None or run["received_at"] >= f.since)
            and (f.until is None or run["received_at"] < f.until)
        )

    return check


async def run_events(
    deps: Deps,
    wanted: Callable[[dict[str, Any]], bool],
    *,
    after: dict[int, int] | None = None,
    closing: Callable[[], bool] = lambda: False,
) -> AsyncIterator[bytes]:
    """The feed's bytes, from ``after`` (a parsed Last-Event-ID) or from now, until ``closing()``.

    The caller's response ends it when the client goes away.
    """
    topic = topics.named(topics.RUNS, deps.namespace)
    seen = after if after is not None else await deps.store.offsets(topic)
    yield f"retry: {RETRY_MS}\n\n".encode()
    quiet_since = time.monotonic()
    while not closing():
        runs, seen = await deps.store.runs_changed(topic, seen)
        sent = [run for run in runs if wanted(run)]
        if sent:
            at = position(seen)
            yield b"".join(
                b"id: %s\nevent: run\ndata: %s\n\n" % (at.encode(), orjson.dumps(run))
                for run in sent
            )
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since >= KEEPALIVE_S:
            yield b": keepalive\n\n"
            quiet_since = time.monotonic()
        await deps.progress.wait(POLL_S)
