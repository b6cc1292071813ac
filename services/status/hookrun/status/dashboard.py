"""The dashboard at /ui/: server-rendered pages over the store, its actions through the admin API.

A person signs in with the admin token and gets a session cookie signed with the service's key
(docs/security.md, Dashboard). Every POST carries the session's CSRF token. Pages are Jinja2
templates with autoescaping; the only script is static/dashboard.js (no inline script), which
the Content-Security-Policy enforces.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qsl, urlencode

import httpx
import orjson
from fastapi import APIRouter, Header, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse, StreamingResponse
from jinja2 import Environment, FileSystemLoader
from starlette.types import Receive, Scope, Send

from hookrun.events import LaunchRequest, RunStatus
from hookrun.status import dag, handlers, routes, stream, subscriptions
from hookrun.status.handlers import ApiError
from hookrun.status.projection import ts
from hookrun.status.store import INFO_STATUSES

HERE = Path(__file__).parent
STATIC = HERE / "static"
COOKIE = "hookrun_session"
CSRF_HEADER = "X-CSRF-Token"
#: Every page's policy: scripts, styles and requests only from this origin, nothing inline.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
#: Longest text of one event's data shown in the timeline.
EVENT_TEXT_LIMIT = 4000

ui = APIRouter(prefix="/ui", include_in_schema=False)


@dataclass(frozen=True)
class Session:
    csrf: str
    expires: int


class Sessions:
    """Issues and reads session cookies: ``<base64 JSON {csrf, exp}>.<base64 HMAC-SHA256>``.

    The MAC key is derived from the service's key and the admin token, so a new admin token
    ends every session signed before it.
    """

    def __init__(
        self, key: bytes, admin_token: str, ttl_s: int, clock: Callable[[], float] = time.time
    ) -> None:
        self._key = hmac.new(key, b"hookrun-ui-session\0" + admin_token.encode(), "sha256").digest()
        self.ttl_s = ttl_s
        self._clock = clock

    def _mac(self, body: bytes) -> bytes:
        return hmac.new(self._key, body, hashlib.sha256).digest()

    def issue(self) -> tuple[str, Session]:
        session = Session(secrets.token_urlsafe(32), int(self._clock()) + self.ttl_s)
        body = base64.urlsafe_b64encode(
            orjson.dumps({"csrf": session.csrf, "exp": session.expires})
        )
        return f"{body.decode()}.{base64.urlsafe_b64encode(self._mac(body)).decode()}", session

    def read(self, cookie: str | None) -> Session | None:
        """The session of a cookie this service signed and that has not expired, else None."""
        if not cookie or cookie.count(".") != 1:
            return None
        body, _, mac = cookie.partition(".")
        try:
            given = base64.urlsafe_b64decode(mac.encode())
            if not hmac.compare_digest(given, self._mac(body.encode())):
                return None
            doc = orjson.loads(base64.urlsafe_b64decode(body.encode()))
            session = Session(str(doc["csrf"]), int(doc["exp"]))
        except (ValueError, KeyError, TypeError, orjson.JSONDecodeError):
            return None
        return session if session.expires > self._clock() else None


def environment() -> Environment:
    """The templates' Jinja2 environment: autoescaping on for everything it renders."""
    env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=True)
    env.filters["pretty"] = lambda value: orjson.dumps(value, option=orjson.OPT_INDENT_2).decode()
    env.filters["short"] = lambda value: str(value)[:8] if value else ""
    env.filters["when"] = lambda value: value.replace("T", " ")[:19] if value else ""
    return env


def _deps(request: Request) -> handlers.Deps:
    return routes.deps_of(request)


def _sessions(request: Request) -> Sessions | None:
    sessions: Sessions | None = request.app.state.sessions
    return sessions


def _session(request: Request) -> Session | None:
    sessions = _sessions(request)
    return None if sessions is None else sessions.read(request.cookies.get(COOKIE))


def _secure(request: Request) -> bool:
    """Whether the browser reached us over https (directly, or through the gateway or a proxy)."""
    forwarded = request.headers.get("x-forwarded-proto", "").split(",")[0].strip().lower()
    return request.url.scheme == "https" or forwarded == "https"


def _page(
    request: Request,
    template: str,
    context: dict[str, Any],
    status: int = 200,
    session: Session | None = None,
) -> HTMLResponse:
    env: Environment = request.app.state.templates
    html = env.get_template(template).render(
        {"session": session, "page": template.removesuffix(".html"), **context}
    )
    return HTMLResponse(html, status, headers=SECURITY_HEADERS)


def _to(path: str) -> RedirectResponse:
    return RedirectResponse(path, 303, headers=SECURITY_HEADERS)


def _signed_in(request: Request) -> Session:
    """The request's session; ApiError 401 (pages redirect to the sign-in instead)."""
    session = _session(request)
    if session is None:
        raise ApiError(401, {"error": "not signed in"})
    return session


def _check_csrf(session: Session, given: str | None) -> None:
    if not given or not hmac.compare_digest(given.encode(), session.csrf.encode()):
        raise ApiError(403, {"error": "missing or wrong CSRF token; reload the page"})


async def _form(request: Request) -> dict[str, str]:
    body = await routes.body_of(request)
    return dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))


@ui.get("")
async def root_without_slash() -> RedirectResponse:
    return _to("/ui/")


@ui.get("/")
async def home(request: Request) -> Response:
    return _to("/ui/runs" if _session(request) else "/ui/login")


@ui.get("/login")
async def login_page(request: Request) -> Response:
    if _session(request) is not None:
        return _to("/ui/runs")
    return _page(request, "login.html", {"disabled": _sessions(request) is None})


@ui.post("/login")
async def login(request: Request) -> Response:
    """Compare the token in constant time; a session cookie only for the right one."""
    sessions = _sessions(request)
    if sessions is None:
        return _page(request, "login.html", {"disabled": True}, 503)
    address = routes.client_address(request)
    wait = routes.throttle(request).retry_after(address, "signin")
    if wait is not None:
        error = (
            f"Too many wrong tokens from your address ({address}). The token was not checked:"
            f" try again in {wait} seconds."
        )
        refused = _page(request, "login.html", {"error": error}, 429)
        refused.headers["Retry-After"] = str(wait)
        return refused
    given = (await _form(request)).get("token", "")
    token = _deps(request).admin_token or ""
    if not hmac.compare_digest(given.encode(), token.encode()):
        if given:  # as on the API, only a token given is a guess
            routes.throttle(request).failed(address, "signin")
        error = "That is not the admin token (HOOKRUN_ADMIN_TOKEN). Nothing was signed in."
        return _page(request, "login.html", {"error": error}, 401)
    cookie, _ = sessions.issue()
    response = _to("/ui/runs")
    response.set_cookie(
        COOKIE,
        cookie,
        max_age=sessions.ttl_s,
        path="/ui",
        secure=_secure(request),
        httponly=True,
        samesite="strict",
    )
    return response


@ui.post("/logout")
async def logout(request: Request) -> Response:
    session = _session(request)
    if session is not None:
        _check_csrf(session, (await _form(request)).get("csrf"))
    response = _to("/ui/login")
    response.delete_cookie(
        COOKIE, path="/ui", secure=_secure(request), httponly=True, samesite="strict"
    )
    return response


def _query(**params: str | None) -> str:
    """A query string of the parameters that are set."""
    return urlencode({k: v for k, v in params.items() if v})


@ui.get("/runs")
async def runs_page(
    request: Request,
    trigger_id: str | None = None,
    status: str | None = None,
    since: str | None = None,
    until: str | None = None,
    cursor: str | None = None,
) -> Response:
    session = _session(request)
    if session is None:
        return _to("/ui/login")
    deps = _deps(request)
    after = await stream.position_now(deps)
    filters = {"trigger_id": trigger_id, "status": status, "since": since, "until": until}
    error: str | None = None
    page: dict[str, Any] = {"runs": [], "next_cursor": None}
    try:
        page = await deps.store.list_runs(
            routes.run_filter(trigger_id, status, since, until, cursor, 50)
        )
    except ApiError as exc:
        error = exc.body["error"]
    next_page = None
    if page["next_cursor"]:
        next_page = "/ui/runs?" + _query(**filters, cursor=page["next_cursor"])
    return _page(
        request,
        "runs.html",
        {
            "runs": page["runs"],
            "filters": filters,
            "error": error,
            "next_page": next_page,
            "first_page": "/ui/runs?" + _query(**filters) if cursor else None,
            # New runs are shown live on the first page only; later pages are history.
            "live": not cursor and error is None,
            "stream": "/ui/runs/stream?" + _query(**filters, after=after),
            "triggers": sorted(deps.triggers),
            "statuses": [*RunStatus.__members__, *sorted(INFO_STATUSES)],
        },
        session=session,
    )


@ui.get("/runs/stream")
async def runs_stream(
    request: Request,
    trigger_id: str | None = None,
    status: str | None = None,
    since: str | None = None,
    until: str | None = None,
    run_id: str | None = None,
    after: str | None = None,
    last_event_id: Annotated[str | None, Header()] = None,
) -> StreamingResponse:
    """The live feed from ``after`` (the page's position), or from where a reconnecting
    EventSource says it got to (Last-Event-ID)."""
    _signed_in(request)
    f = routes.run_filter(trigger_id, status, since, until)
    return routes.run_stream(request, _deps(request), f, run_id, last_event_id or after)


def _original_payload(events: list[dict[str, Any]]) -> str:
    """The launch's payload as the replay editor starts with it (pretty JSON), or ""."""
    for event in events:
        if event.get("type") == "hookrun.trigger.launched":
            try:
                payload = LaunchRequest.model_validate(event["data"]["request"]).payload()
            except (KeyError, TypeError, ValueError):
                return ""
            if payload is None:
                return ""
            return orjson.dumps(payload, option=orjson.OPT_INDENT_2).decode()
    return ""


def _timeline(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for event in events:
        text = orjson.dumps(event.get("data"), option=orjson.OPT_INDENT_2).decode()
        if len(text) > EVENT_TEXT_LIMIT:
            text = text[:EVENT_TEXT_LIMIT] + "\n..."
        out.append({"type": event.get("type", "?"), "time": event.get("time"), "data": text})
    return out


def _drawings(run: dict[str, Any]) -> list[dict[str, Any]]:
    """Each pipeline with its DAG laid out, a node's state that of its latest execution."""
    out = []
    for pipeline in run["pipelines"]:
        states: dict[str, str] = {}
        for x in run["executions"]:  # in creation order: a retry's attempt comes later
            if x["pipeline_id"] == pipeline["pipeline_id"] and x["node"]:
                states[x["node"]] = x["status"]
        for node in pipeline["skipped"]:
            states[node] = "skipped"
        drawing = dag.layout(pipeline["nodes"] or {}, pipeline["edges"] or [], states)
        out.append({**pipeline, "drawing": drawing})
    return out


@ui.get("/runs/{run_id}")
async def run_page(request: Request, run_id: str) -> Response:
    session = _session(request)
    if session is None:
        return _to("/ui/login")
    deps = _deps(request)
    live = "/ui/runs/stream?" + _query(run_id=run_id, after=await stream.position_now(deps))
    try:
        run = await handlers.known_run(run_id, deps)
    except ApiError as exc:
        # A run opened as soon as it was launched may not be stored yet: the page reloads
        # when it is.
        context = {"error": exc.body["error"], "run_id": run_id}
        if exc.status == 404:
            context["stream"] = live
        return _page(request, "missing.html", context, exc.status, session)
    events = await deps.store.run_events(run_id)
    context = {
        "run": run,
        "pipelines": _drawings(run),
        "timeline": _timeline(events),
        "payload": _original_payload(events),
        "stream": live,
        # The buttons the admin API would refuse (409) are not offered; the live part of the
        # page, which holds them, is rendered again as the run moves on.
        "redeliver_refused": subscriptions.redelivery_refused(run, None, deps),
    }
    return _page(request, "run.html", context, session=session)


@ui.get("/triggers")
async def triggers_page(request: Request) -> Response:
    session = _session(request)
    if session is None:
        return _to("/ui/login")
    deps = _deps(request)
    hour = ts(datetime.now(tz=UTC) - timedelta(hours=1)) or ""
    counts: dict[str, dict[str, Any]] = {}
    for row in await deps.store.launch_counts(hour):
        entry = counts.setdefault(row["trigger_id"], {"outcomes": {}, "last_at": None})
        entry["outcomes"][row["outcome"]] = int(row["count"])
        entry["last_at"] = max(entry["last_at"] or "", row["last_at"] or "") or None
    rows = []
    for trigger_id in sorted({*deps.triggers, *counts}):
        trigger = deps.triggers.get(trigger_id)
        seen = counts.get(trigger_id, {"outcomes": {}, "last_at": None})
        accepted = seen["outcomes"].get("accepted", 0)
        rows.append(
            {
                "id": trigger_id,
                "title": trigger.title if trigger is not None else "(not in this config)",
                "enabled": trigger is not None and trigger.enabled,
                "accepted": accepted,
                "refused": sum(n for o, n in seen["outcomes"].items() if o != "accepted"),
                "outcomes": seen["outcomes"],
                "per_minute": round(accepted / 60, 2),
                "last_at": seen["last_at"],
            }
        )
    return _page(request, "triggers.html", {"triggers": rows}, session=session)


@ui.get("/triggers/{trigger_id}")
async def trigger_page(request: Request, trigger_id: str, cursor: str | None = None) -> Response:
    session = _session(request)
    if session is None:
        return _to("/ui/login")
    deps = _deps(request)
    error: str | None = None
    log: dict[str, Any] = {"entries": [], "next_cursor": None}
    try:
        after = routes.run_filter(None, None, None, None, cursor).after
        log = await deps.store.trigger_log(trigger_id, after, 50)
    except ApiError as exc:
        error = exc.body["error"]
    next_page = None
    if log["next_cursor"]:
        next_page = f"/ui/triggers/{trigger_id}?" + _query(cursor=log["next_cursor"])
    trigger = deps.triggers.get(trigger_id)
    context = {
        "trigger_id": trigger_id,
        "trigger": trigger,
        "entries": log["entries"],
        "error": error,
        "next_page": next_page,
    }
    return _page(request, "trigger.html", context, session=session)


@ui.get("/subscriptions")
async def subscriptions_page(request: Request) -> Response:
    """Each subscription's state, recent success rate and last attempt, as the admin API has them."""
    session = _session(request)
    if session is None:
        return _to("/ui/login")
    listed = await subscriptions.list_subscriptions(_deps(request))
    return _page(request, "subscriptions.html", listed, session=session)


@ui.api_route("/api/v1/{path:path}", methods=["GET", "POST", "PATCH", "DELETE"])
async def admin_api(
    request: Request,
    path: str,
    x_csrf_token: Annotated[str | None, Header()] = None,
) -> Response:
    """The admin API for the signed-in browser: its answer, as for the admin token.

    Answered in-process by the same routes that answer ``/api/v1/...`` with the bearer token, so
    the dashboard's buttons (cancel, replay, redeliver) follow that API's contract.
    """
    session = _signed_in(request)
    segments = path.split("/")
    if any(s in ("", ".", "..") for s in segments) or "\\" in path or path == "runs/stream":
        # Only the admin routes themselves; the live feed is GET /ui/runs/stream.
        raise ApiError(404, {"error": "not an admin API path"})
    if request.method != "GET":
        _check_csrf(session, x_csrf_token)
    body = await routes.body_of(request)
    headers: dict[str, str] = {}
    if "content-type" in request.headers:
        headers["Content-Type"] = request.headers["content-type"]
    app = request.app

    async def as_signed_in(scope: Scope, receive: Receive, send: Send) -> None:
        # The session stands for the token: a throttled address (a shared NAT, the loopback
        # this call comes from) must not refuse a signed-in person's buttons.
        await app({**scope, routes.SIGNED_IN: True}, receive, send)

    transport = httpx.ASGITransport(app=as_signed_in)
    async with httpx.AsyncClient(transport=transport, base_url="http://status") as client:
        upstream = await client.request(
            request.method,
            "/api/v1/" + path,
            params=request.url.query,
            content=body,
            headers=headers,
        )
    kept = {
        k: v for k, v in upstream.headers.items() if k.lower() in ("content-type", "retry-after")
    }
    return Response(upstream.content, upstream.status_code, {**kept, **SECURITY_HEADERS})
