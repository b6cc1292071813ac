"""HTTP routes of the gateway: thin request -> handler -> response code."""

from __future__ import annotations

import asyncio
import logging
import string
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import parse_qsl, quote, unquote

import httpx
from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse
from fastapi.routing import APIRoute
from starlette.background import BackgroundTask
from starlette.types import Receive, Scope, Send

from hookrun.config import InboundRequest
from hookrun.config.bodies import BodyTooLarge, ClientDisconnected, read_body, receive_body
from hookrun.config.conditions import Headers
from hookrun.events import tracing
from hookrun.gateway import handlers

log = logging.getLogger(__name__)

router = APIRouter()


LAUNCH_PREFIX = "/api/v0/launch/"


def launch_target(scope: Scope) -> str | None:
    """The trigger id if ``scope`` is ``POST /api/v0/launch/{trigger_id}[/]``, else None.

    Matches what the launch routes below match (a trigger id is one non-empty path segment);
    a request under a root path is left to them.
    """
    if scope["type"] != "http" or scope["method"] != "POST" or scope.get("root_path"):
        return None
    path: str = scope["path"]
    if not path.startswith(LAUNCH_PREFIX):
        return None
    trigger_id = path[len(LAUNCH_PREFIX) :]
    if trigger_id.endswith("/"):
        trigger_id = trigger_id[:-1]
    if not trigger_id or "/" in trigger_id:
        return None
    return trigger_id


class LaunchEndpoint:
    """The launch as a bare ASGI endpoint: app.GatewayApp calls it before FastAPI does anything.

    It reads only what the launch rules need straight from the ASGI scope: FastAPI's
    middleware, routing and Request cost as much CPU as the rules (decision 0009). A launch
    that FastAPI routes (under a root path) reaches it through :class:`LaunchRoute`.
    """

    def __init__(self, deps: handlers.Deps, max_body_bytes: int) -> None:
        self.deps = deps
        self.max_body_bytes = max_body_bytes

    async def __call__(self, trigger_id: str, scope: Scope, receive: Receive, send: Send) -> None:
        started = False

        async def send_reply(reply: handlers.Reply) -> None:
            nonlocal started
            headers = [
                (b"content-length", str(len(reply.body)).encode()),
                (b"content-type", reply.content_type.encode("latin-1")),
            ]
            headers += [
                (k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in reply.headers.items()
            ]
            started = True
            await send({"type": "http.response.start", "status": reply.status, "headers": headers})
            await send({"type": "http.response.body", "body": reply.body})

        try:
            raw_headers: list[tuple[bytes, bytes]] = scope["headers"]
            try:
                body = await receive_body(raw_headers, receive, self.max_body_bytes)
            except BodyTooLarge:
                request = _inbound(scope, raw_headers, b"")
                await send_reply(
                    handlers.reject(trigger_id, request, self.deps, "body too large", 413)
                )
                return
            except ClientDisconnected:
                return
            request = _inbound(scope, raw_headers, body)
            if tracing.enabled():
                reply = await self._launch_traced(trigger_id, request)
            else:
                reply = await handlers.launch(trigger_id, request, self.deps)
            await send_reply(reply)
        except Exception:
            # What Starlette's ServerErrorMiddleware does: a 500 if nothing was sent, then raise
            # so that the server logs the error.
            if not started:
                await send_reply(
                    handlers.Reply(500, b"Internal Server Error", "text/plain; charset=utf-8")
                )
            raise

    async def _launch_traced(self, trigger_id: str, request: InboundRequest) -> handlers.Reply:
        """The launch in a server span, a child of the sender's ``traceparent`` if valid."""
        sender = tracing.parse(
            request.headers.get("traceparent"), request.headers.get("tracestate")
        )
        attributes = {
            "http.request.method": "POST",
            "http.route": _LAUNCH_ROUTE,
            "url.path": request.path,
            "hookrun.trigger_id": trigger_id,
        }
        with tracing.span(
            _LAUNCH_SPAN, parent=sender, kind="server", attributes=attributes
        ) as span:
            reply = await handlers.launch(trigger_id, request, self.deps)
            assert span is not None
            span.set_attribute("http.response.status_code", reply.status)
            if reply.status >= 500:
                tracing.fail(span, f"HTTP {reply.status}")
        return reply


_LAUNCH_ROUTE = "/api/v0/launch/{trigger_id}/"
_LAUNCH_SPAN = f"POST {_LAUNCH_ROUTE}"


def _inbound(scope: Scope, headers: list[tuple[bytes, bytes]], body: bytes) -> InboundRequest:
    """The framework-free view of a request that conditions check, from its ASGI scope.

    Header names and values are latin-1, as Starlette reads them.
    """
    query_string: bytes = scope.get("query_string", b"")
    client = scope.get("client")
    return InboundRequest(
        method=scope["method"],
        path=scope["path"],
        headers=Headers([(k.decode("latin-1"), v.decode("latin-1")) for k, v in headers]),
        query=dict(parse_qsl(query_string.decode("latin-1"), keep_blank_values=True))
        if query_string
        else {},
        body=body,
        remote_addr=client[0] if client else None,
    )


class LaunchRoute(APIRoute):
    """A launch route as FastAPI declares it, answered by the app's :class:`LaunchEndpoint`.

    The declaration gives /openapi.json its launch operation; a request the route matches (a
    launch under a root path, which GatewayApp leaves to FastAPI) goes to the same endpoint
    object as the fast path, so a launch has one implementation whichever way it comes.
    """

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        super().__init__(path, endpoint, **kwargs)
        self.app = _launch_matched


async def _launch_matched(scope: Scope, receive: Receive, send: Send) -> None:
    endpoint: LaunchEndpoint = scope["app"].launch_endpoint
    await endpoint(scope["path_params"]["trigger_id"], scope, receive, send)


#: The launch routes. app.build adds them to the app's own router, not with include_router:
#: FastAPI answers an included route with a handler it rebuilds from the declaration.
launch_routes = APIRouter(route_class=LaunchRoute)


@launch_routes.post(
    "/api/v0/launch/{trigger_id}/",
    status_code=202,
    summary="Launch a trigger",
    responses={
        200: {
            "description": 'The trigger\'s filter left the launch out: {"ok": true, "filtered": true}'
        },
        202: {"description": "Accepted: the trigger's response with {run_id} filled in"},
        400: {
            "description": "Unknown or disabled trigger, or a condition failed (one body for all)"
        },
        413: {"description": "Body over HOOKRUN_MAX_BODY_BYTES"},
        429: {"description": "Past the trigger's rate limit; retry after Retry-After seconds"},
        503: {"description": "Kafka did not acknowledge; retry after Retry-After seconds"},
    },
)
@launch_routes.post("/api/v0/launch/{trigger_id}", include_in_schema=False)
async def launch(trigger_id: str) -> None:
    """Authenticate the webhook, append TriggerLaunched, answer with the run id."""


def _kafka_ready(request: Request) -> bool:
    """Both producers are connected: the plain one and the one for launches with delivery ids."""
    state = request.app.state
    return all(p is None or p.ready for p in (state.publisher, getattr(state, "together", None)))


@router.get("/healthz", summary="Liveness and Kafka readiness")
async def healthz(request: Request) -> dict[str, bool]:
    """``kafka`` is true once the producers are connected."""
    return {"ok": True, "kafka": _kafka_ready(request)}


@router.get(
    "/readyz",
    summary="Readiness: 503 until Kafka takes launches",
    responses={503: {"description": "Not ready: a producer is not connected"}},
)
async def readyz(request: Request, response: Response) -> dict[str, bool]:
    """200 while both producers are connected (a launch can be acknowledged); 503 otherwise."""
    ready = _kafka_ready(request)
    if not ready:
        response.status_code = 503
    return {"ready": ready}


RUN_INFO_RESPONSES: dict[int | str, dict[str, object]] = {
    200: {
        "description": '{"status": "pending|completed|error|complete_with_error", "result": [...]}'
    },
    400: {
        "description": "A condition failed, or run_id is outside a body the conditions sign"
        " (the same body as a rejected launch)"
    },
    404: {"description": "No such run for this trigger"},
}

# Hop-by-hop headers and those httpx recomputes are not forwarded.
_NOT_FORWARDED = frozenset(
    {"host", "content-length", "connection", "keep-alive", "transfer-encoding"}
)
_NOT_FORWARDED_RAW = frozenset(name.encode() for name in _NOT_FORWARDED)
#: Request headers the gateway sets itself from the connection, never the client's.
_SET_BY_GATEWAY_RAW = frozenset({b"x-forwarded-proto"})

# What a path may hold as sent (RFC 3986 pchar, "/" and "%" escapes). Anything else ("#", "?",
# backslashes, spaces, bytes over 0x7f) is read differently by the clients and servers behind.
_PATH_CHARACTERS = frozenset(string.ascii_letters + string.digits + "-._~!$&'()*+,;=:@%/")
_NOT_FOUND = b'{"detail":"Not Found"}'


def forwarded_path(raw_path: str) -> str | None:
    """The path to forward to the status service for ``raw_path`` (as sent, percent-encoded).

    Dot segments are resolved, "%2e%2e" as "..": the result must be under /api/v1/, be the
    dashboard (/ui or under /ui/) or a run-info path /api/v0/launch/<one segment>/run[/], else
    None. None too for a segment that
    holds a slash or a backslash, escaped or not, and for an empty one ("//"). Segments keep
    their escapes: decoded, "%1F" would be a control character that httpx refuses.
    """
    if not raw_path.startswith("/") or not _PATH_CHARACTERS.issuperset(raw_path):
        return None
    parts = raw_path[1:].split("/")
    segments: list[str] = []
    for index, part in enumerate(parts):
        last = index == len(parts) - 1
        decoded = unquote(part)
        if decoded in (".", ".."):
            if decoded == ".." and segments:
                segments.pop()
            if last:
                segments.append("")  # "/a/b/.." is "/a/", a directory
        elif "/" in decoded or "\\" in decoded or (not decoded and not last):
            return None
        else:
            segments.append(part)
    if (len(segments) >= 3 and segments[:2] == ["api", "v1"]) or segments[:1] == ["ui"]:
        return "/" + "/".join(segments)
    if (
        len(segments) in (5, 6)
        and segments[:3] == ["api", "v0", "launch"]
        and segments[3]
        and segments[4] == "run"
        and segments[5:] in ([], [""])
    ):
        return "/" + "/".join(segments)
    return None


async def forward(request: Request) -> Response:
    """Forward a run-info or admin request to the status service once its path and size pass.

    Only a normalised admin or run-info path is forwarded (see forwarded_path); any other gets
    the 404 of a path the gateway does not serve, so "/api/v1/../../openapi.json" and its
    escaped forms never reach the status service's other pages.
    """
    # The path as the client sent it (still percent-encoded).
    raw_path = request.scope.get("raw_path")
    path = forwarded_path(raw_path.decode("latin-1") if raw_path else quote(request.url.path))
    if path is None:
        return Response(_NOT_FOUND, 404, media_type="application/json")
    try:
        body = await read_body(request, request.app.state.max_body_bytes)
    except BodyTooLarge:
        return Response(b'{"error":"request body too large"}', 413, media_type="application/json")
    # Raw (latin-1) bytes: a header value outside ASCII must not turn into a 500 here.
    skip = _NOT_FORWARDED_RAW | _SET_BY_GATEWAY_RAW
    if request.client is not None:
        skip |= {b"x-forwarded-for"}
    headers = [(k, v) for k, v in request.headers.raw if k.lower() not in skip]
    if request.client is not None:
        # The status service checks conditions such as an IP allow-list against the sender.
        headers.append((b"x-forwarded-for", request.client.host.encode()))
    # The dashboard marks its cookie Secure when the browser came over https.
    headers.append((b"x-forwarded-proto", request.url.scheme.encode("latin-1")))
    url = path + (f"?{request.url.query}" if request.url.query else "")
    state = request.app.state
    client: httpx.AsyncClient = state.feed_client if path in FEED_PATHS else state.status_client
    try:
        sent = client.build_request(request.method, url, content=body, headers=headers)
        upstream = await client.send(sent, stream=True)
    except httpx.HTTPError as exc:
        log.warning("status service unreachable: %r", exc)
        return Response(
            b'{"error":"status service unavailable, retry later"}',
            503,
            {"Retry-After": str(request.app.state.deps.retry_after_s)},
            media_type="application/json",
        )
    if upstream.headers.get("content-type", "").startswith("text/event-stream"):
        # A live feed (GET /api/v1/runs/stream, /ui/runs/stream): relayed as it comes.
        streamed = StreamingResponse(
            _relayed(upstream, request.app.state.closing),
            upstream.status_code,
            background=BackgroundTask(upstream.aclose),
        )
        return _with_headers(streamed, upstream)
    try:
        content = await upstream.aread()
    except httpx.HTTPError as exc:
        log.warning("status service answer cut short: %r", exc)
        return Response(
            b'{"error":"status service unavailable, retry later"}',
            503,
            {"Retry-After": str(request.app.state.deps.retry_after_s)},
            media_type="application/json",
        )
    finally:
        await upstream.aclose()
    return _with_headers(Response(content, upstream.status_code), upstream)


#: The live run feeds (server-sent events), relayed on a connection pool of their own.
FEED_PATHS = frozenset({"/api/v1/runs/stream", "/ui/runs/stream"})
#: Most feeds relayed at once; one more waits for a place, then gets 503.
MAX_FEEDS = 64
#: How often a relayed feed waiting for its next chunk checks whether the gateway shuts down.
CLOSING_POLL_S = 0.5


async def _relayed(upstream: httpx.Response, closing: Callable[[], bool]) -> AsyncIterator[bytes]:
    """The chunks of a live feed as they come, until it ends or the gateway shuts down."""
    chunks = upstream.aiter_raw()
    pending: asyncio.Future[bytes | None] | None = None
    try:
        while True:
            if pending is None:
                pending = asyncio.ensure_future(anext(chunks, None))
            done, _ = await asyncio.wait({pending}, timeout=CLOSING_POLL_S)
            if not done:
                if closing():
                    return
                continue
            chunk, pending = pending.result(), None
            if chunk is None:
                return
            yield chunk
    finally:
        if pending is not None:
            pending.cancel()


def _with_headers(response: Response, upstream: httpx.Response) -> Response:
    """``response`` with the status service's headers, each one (several Set-Cookie too)."""
    response.raw_headers = [
        (k.lower().encode("latin-1"), v.encode("latin-1"))
        for k, v in upstream.headers.multi_items()
        # httpx decoded the body already; the length is recomputed or the body streamed.
        if k.lower() not in _NOT_FORWARDED and k.lower() != "content-encoding"
    ] + [(k, v) for k, v in response.raw_headers if k == b"content-length"]
    return response


@router.get(
    "/api/v0/launch/{trigger_id}/run/",
    operation_id="run_info_get",
    summary="Run info (Valohai contract) with ?run_id= for conditions that do not sign the body,"
    " answered by the status service",
    responses=RUN_INFO_RESPONSES,
)
@router.post(
    "/api/v0/launch/{trigger_id}/run/",
    operation_id="run_info_post",
    summary="Run info (Valohai contract), run_id in a form or JSON body",
    responses={
        200: {
            "description": '{"status": "pending|completed|error|complete_with_error", "result": [...]}'
        },
        400: RUN_INFO_RESPONSES[400],
        404: {"description": "No such run for this trigger"},
    },
)
@router.api_route(
    "/api/v0/launch/{trigger_id}/run", methods=["GET", "POST"], include_in_schema=False
)
async def run_info(trigger_id: str, request: Request) -> Response:
    """GET with ?run_id= or POST with run_id in a form or JSON body; same conditions as launch."""
    return await forward(request)


@router.api_route(
    "/api/v1/{path:path}",
    methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
    summary="Admin API (bearer HOOKRUN_ADMIN_TOKEN), answered by the status service",
    include_in_schema=False,
)
async def admin(path: str, request: Request) -> Response:
    """See the status service's OpenAPI document for the admin routes."""
    return await forward(request)


@router.api_route("/ui", methods=["GET", "POST"], include_in_schema=False)
@router.api_route("/ui/{path:path}", methods=["GET", "POST"], include_in_schema=False)
async def dashboard(request: Request) -> Response:
    """The dashboard (docs/status.md, Dashboard), answered by the status service."""
    return await forward(request)
