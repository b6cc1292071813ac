"""HTTP routes of the status service: thin request -> handler -> response code."""

from __future__ import annotations

import hmac
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.responses import StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from hookrun.config import InboundRequest
from hookrun.config.addresses import source_address
from hookrun.config.bodies import BodyTooLarge, read_body
from hookrun.events import RunStatus
from hookrun.events.limits import json_too_deep
from hookrun.status import handlers, schedules, stream, subscriptions
from hookrun.status.guard import AuthThrottle
from hookrun.status.handlers import ApiError
from hookrun.status.store import INFO_STATUSES, RunFilter, decode_cursor

router = APIRouter()
#: ASGI scope key the dashboard sets on its in-process admin calls for a signed-in session;
#: a client cannot set a scope key, only headers.
SIGNED_IN = "hookrun.signed_in"
_bearer = HTTPBearer(auto_error=False, description="HOOKRUN_ADMIN_TOKEN")


def json(body: Any, status: int = 200) -> Response:
    """A JSON response serialised with orjson (faster than FastAPI's encoder)."""
    return Response(orjson.dumps(body), status, media_type="application/json")


async def body_of(request: Request) -> bytes:
    """The request body; 413 when it is over HOOKRUN_MAX_BODY_BYTES, before it is read whole."""
    try:
        return await read_body(request, request.app.state.max_body_bytes)
    except BodyTooLarge as exc:
        raise ApiError(413, {"error": "request body too large"}) from exc


def inbound(request: Request, body: bytes) -> InboundRequest:
    """The framework-free view of a request that conditions check."""
    scope = request.scope
    path: str = scope["path"]
    if "?" in path or "#" in path or "\\" in path:
        path = request.url.path  # escapes them; a URL is built only then (decision 0021)
    return InboundRequest(
        method=request.method,
        path=path,
        headers=request.headers,
        query=dict(request.query_params) if scope.get("query_string") else {},
        body=body,
        remote_addr=request.client.host if request.client else None,
    )


def deps_of(request: Request) -> handlers.Deps:
    deps: handlers.Deps = request.app.state.deps
    return deps


def client_address(request: Request) -> str:
    """The client's address as limits count it (an IPv6 one by its /64): the peer's, or the
    X-Forwarded-For of a peer in FORWARDED_ALLOW_IPS (the app's ProxyHeadersMiddleware)."""
    return source_address(request.client.host if request.client else None)


def throttle(request: Request) -> AuthThrottle:
    """The app's count of wrong admin tokens per client address."""
    counted: AuthThrottle = request.app.state.auth_throttle
    return counted


async def admin(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> handlers.Deps:
    """The admin API's guard: 503 while HOOKRUN_ADMIN_TOKEN is unset, 401 without it, 429 to an
    address past its wrong tokens (compared with nothing then)."""
    deps = deps_of(request)
    if deps.admin_token is None:
        raise ApiError(503, {"error": "admin API disabled"})
    if request.scope.get(SIGNED_IN):
        return deps  # the dashboard's own call for a signed-in session: nothing was guessed
    address = client_address(request)
    wait = throttle(request).retry_after(address, "api")
    if wait is not None:
        raise ApiError(
            429,
            {"error": f"too many wrong admin tokens from {address}; retry after {wait} s"},
            {"Retry-After": str(wait)},
        )
    if credentials is None:
        raise ApiError(401, {"error": "unauthorized"}, {"WWW-Authenticate": "Bearer"})
    if not hmac.compare_digest(credentials.credentials.encode(), deps.admin_token.encode()):
        throttle(request).failed(address, "api")
        raise ApiError(401, {"error": "unauthorized"}, {"WWW-Authenticate": "Bearer"})
    return deps


Admin = Annotated[handlers.Deps, Depends(admin)]

Responses = dict[int | str, dict[str, Any]]

#: The body of every error answer: ``{"error": "<why>"}``.
_ERROR_CONTENT = {
    "application/json": {
        "schema": {
            "type": "object",
            "properties": {"error": {"type": "string"}},
            "required": ["error"],
        }
    }
}


def _errors(whys: dict[int, str]) -> Responses:
    """OpenAPI ``responses`` for error answers, e.g. ``_errors({404: "run not found"})``."""
    return {code: {"description": why, "content": _ERROR_CONTENT} for code, why in whys.items()}


#: What every admin operation can answer besides its own success and errors.
_ADMIN_RESPONSES = _errors(
    {
        401: "No or a wrong bearer token (HOOKRUN_ADMIN_TOKEN)",
        429: "Too many wrong tokens from this client address within HOOKRUN_ADMIN_FAILURE_WINDOW_S"
        " (Retry-After); the token was not compared",
        503: "Admin API disabled (no HOOKRUN_ADMIN_TOKEN), or the run store is catching up"
        " or Kafka did not acknowledge (Retry-After)",
    }
)
_ONE_RUN_RESPONSES = {
    **_ADMIN_RESPONSES,
    **_errors({404: "No such run (the store is caught up with the runs topic)"}),
}
_RUN_REQUEST_RESPONSES = {
    **_ONE_RUN_RESPONSES,
    **_errors(
        {
            400: "The body is not a JSON object",
            409: "The run's state does not allow it (already finished, or not finished yet)",
            413: "Body over HOOKRUN_MAX_BODY_BYTES",
        }
    ),
}
_CURSOR_RESPONSES = {
    **_ADMIN_RESPONSES,
    **_errors({400: "An invalid cursor, status or time"}),
}

_RUN_INFO_RESPONSES: Responses = {
    200: {
        "description": '{"status": "pending"|"completed"|"error"|"complete_with_error", "result": [...]}'
    },
    400: {
        "description": "Unknown or disabled trigger, failed condition, run_id outside the signed"
        " body of a trigger whose conditions sign it (one body for all), or no run_id"
    },
    404: {"description": '{"error": "run not found"}: unknown run or another trigger\'s run'},
    413: {"description": "Body over HOOKRUN_MAX_BODY_BYTES"},
    503: {"description": "Kafka or the projection could not confirm the run in time"},
}


@router.get(
    "/api/v0/launch/{trigger_id}/run/", summary="Run info (GET)", responses=_RUN_INFO_RESPONSES
)
@router.post(
    "/api/v0/launch/{trigger_id}/run/",
    summary="Run info (POST form or JSON)",
    responses=_RUN_INFO_RESPONSES,
)
async def run_info(trigger_id: str, request: Request) -> Response:
    """Valohai's run info; the request passes the same conditions as the launch."""
    deps = deps_of(request)
    body = await body_of(request)
    return json(await handlers.run_info(trigger_id, inbound(request, body), deps))


async def serve_run_info(request: Request) -> Response:
    """Run info as a plain Starlette endpoint, matched before the FastAPI route (see app.py).

    It skips FastAPI's per-request dependency solving and the exception-handler hop (the hot
    path of a polled endpoint); the FastAPI route above stays for the OpenAPI document.
    """
    try:
        return await run_info(request.path_params["trigger_id"], request)
    except ApiError as exc:
        return Response(orjson.dumps(exc.body), exc.status, exc.headers, "application/json")


@router.get(
    "/api/v1/runs",
    summary="List runs, newest first",
    tags=["admin"],
    responses={
        200: {
            "description": "`runs`, `next_cursor`, and `position`: the live feed's position"
            " before the page was read, to start GET /api/v1/runs/stream from as its"
            " Last-Event-ID (docs/status.md)"
        },
        **_CURSOR_RESPONSES,
    },
)
async def list_runs(
    deps: Admin,
    trigger_id: str | None = None,
    status: Annotated[
        str | None,
        Query(
            description="A RunNotification status (SUCCESS, FAILURE, ...) or a run-info status (pending, ...)"
        ),
    ] = None,
    since: Annotated[str | None, Query(description="received_at >= since (RFC 3339, UTC)")] = None,
    until: Annotated[str | None, Query(description="received_at < until (RFC 3339, UTC)")] = None,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> Response:
    f = run_filter(trigger_id, status, since, until, cursor, limit)
    # Read before the page: a feed started from it also sends what changed while it was read.
    at = await stream.position_now(deps)
    return json({**await deps.store.list_runs(f), "position": at})


def run_filter(
    trigger_id: str | None,
    status: str | None,
    since: str | None,
    until: str | None,
    cursor: str | None = None,
    limit: int = 50,
) -> RunFilter:
    """The run list's filter from its query parameters; ApiError 400 names the bad one."""
    f = RunFilter(
        trigger_id=trigger_id or None, since=_time(since), until=_time(until), limit=limit
    )
    if status:
        if status.upper() in RunStatus.__members__:
            f.run_status = status.upper()
        elif status.lower() in INFO_STATUSES:
            f.info_status = status.lower()
        else:
            raise ApiError(400, {"error": f"unknown status {status!r}"})
    if cursor:
        try:
            f.after = decode_cursor(cursor)
        except ValueError as exc:
            raise ApiError(400, {"error": "invalid cursor"}) from exc
    return f


def _time(value: str | None) -> str | None:
    """Normalise an RFC 3339 time to the store's fixed-width UTC text."""
    if not value:
        return None
    from datetime import datetime

    from hookrun.status.projection import ts

    try:
        return ts(datetime.fromisoformat(value.replace("Z", "+00:00")))
    except ValueError as exc:
        raise ApiError(400, {"error": f"invalid time {value!r}"}) from exc


@router.get(
    "/api/v1/runs/stream",
    summary="Runs as they change: server-sent events, one `run` event per change",
    tags=["admin"],
    responses={
        200: {
            "description": "`event: run`, `data:` one run object of GET /api/v1/runs, `id:` a"
            " position to resume from with Last-Event-ID (docs/status.md)",
            "content": {"text/event-stream": {}},
        },
        **_CURSOR_RESPONSES,
    },
)
async def stream_runs(
    request: Request,
    deps: Admin,
    trigger_id: str | None = None,
    status: str | None = None,
    since: str | None = None,
    until: str | None = None,
    run_id: str | None = None,
    last_event_id: Annotated[str | None, Header()] = None,
) -> StreamingResponse:
    f = run_filter(trigger_id, status, since, until)
    return run_stream(request, deps, f, run_id, last_event_id)


def run_stream(
    request: Request,
    deps: handlers.Deps,
    f: RunFilter,
    run_id: str | None,
    last_event_id: str | None,
) -> StreamingResponse:
    """The live run feed of runs that pass ``f`` (and are ``run_id``), see hookrun.status.stream."""
    after = stream.parse_position(last_event_id) if last_event_id else None
    feed = stream.run_events(
        deps, stream.matches(f, run_id), after=after, closing=request.app.state.closing
    )
    return StreamingResponse(
        feed,
        media_type="text/event-stream",
        # Proxies such as nginx would hold the events back in their buffers otherwise.
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


@router.get(
    "/api/v1/runs/{run_id}",
    summary="One run: actions, executions, deliveries",
    tags=["admin"],
    responses=_ONE_RUN_RESPONSES,
)
async def get_run(run_id: str, deps: Admin) -> Response:
    return json(await handlers.known_run(run_id, deps))


@router.get(
    "/api/v1/runs/{run_id}/events",
    summary="A run's raw events (CloudEvents)",
    tags=["admin"],
    responses=_ONE_RUN_RESPONSES,
)
async def run_events(run_id: str, deps: Admin) -> Response:
    await handlers.known_run(run_id, deps)
    return json({"run_id": run_id, "events": await deps.store.run_events(run_id)})


@router.post(
    "/api/v1/runs/{run_id}/cancel",
    status_code=202,
    summary="Cancel a run",
    tags=["admin"],
    responses=_RUN_REQUEST_RESPONSES,
)
async def cancel_run(run_id: str, request: Request, deps: Admin) -> Response:
    body = await _json_body(request)
    return json(await handlers.cancel(run_id, str(body.get("reason", "")), deps), 202)


@router.post(
    "/api/v1/runs/{run_id}/redeliver",
    status_code=202,
    summary="Send the run's notification again",
    tags=["admin"],
    responses={
        **_RUN_REQUEST_RESPONSES,
        **_errors(
            {
                409: "The run has not finished, or nothing would be sent: its trigger has no"
                " subscription, none enabled, none whose statuses take the run's, or"
                " `subscription_id` is not an enabled one of the trigger's (`error` says which)"
            }
        ),
    },
)
async def redeliver(run_id: str, request: Request, deps: Admin) -> Response:
    body = await _json_body(request)
    sub = body.get("subscription_id")
    return json(await subscriptions.redeliver(run_id, None if sub is None else str(sub), deps), 202)


@router.post(
    "/api/v1/runs/{run_id}/replay",
    status_code=202,
    summary="Start a new run of the run's trigger, with its payload or a new one",
    tags=["admin"],
    openapi_extra={
        "requestBody": {
            "required": False,
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "properties": {
                            "payload": {"description": "Replaces the original payload (as JSON)"}
                        },
                    }
                }
            },
        }
    },
    responses={
        **_ONE_RUN_RESPONSES,
        **_errors(
            {
                400: "The body is not a JSON object, or its payload nests too deep",
                409: "The run's trigger is disabled or no longer in the config",
                413: "Body over HOOKRUN_MAX_BODY_BYTES",
            }
        ),
    },
)
async def replay(run_id: str, request: Request, deps: Admin) -> Response:
    body = await _json_body(request, payload_depth=deps.max_json_depth)
    payload = body["payload"] if "payload" in body else handlers.ORIGINAL_PAYLOAD
    return json(await handlers.replay(run_id, payload, deps), 202)


@router.get(
    "/api/v1/triggers/{trigger_id}/log",
    summary="Accepted and rejected launches",
    tags=["admin"],
    responses=_CURSOR_RESPONSES,
)
async def trigger_log(
    trigger_id: str,
    deps: Admin,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> Response:
    after = None
    if cursor:
        try:
            after = decode_cursor(cursor)
        except ValueError as exc:
            raise ApiError(400, {"error": "invalid cursor"}) from exc
    return json(await deps.store.trigger_log(trigger_id, after, limit))


@router.post(
    "/api/v1/triggers/{trigger_id}/test-launch",
    status_code=202,
    summary="Launch with the request body as payload, skipping conditions (isTest)",
    tags=["admin"],
    responses={
        **_ADMIN_RESPONSES,
        **_errors(
            {
                400: "The body is JSON nested deeper than HOOKRUN_MAX_JSON_DEPTH",
                404: "No such trigger",
                409: "The trigger is disabled",
                413: "Body over HOOKRUN_MAX_BODY_BYTES",
            }
        ),
    },
)
async def test_launch(trigger_id: str, request: Request, deps: Admin) -> Response:
    body = await body_of(request)
    return json(await handlers.launch_test_run(trigger_id, inbound(request, body), deps), 202)


@router.get(
    "/api/v1/subscriptions",
    summary="Every subscription with its state, recent success rate and last attempt",
    tags=["admin"],
    responses={
        200: {
            "description": "Config-file subscriptions first, in file order, then those made"
            " through the API",
            "content": {"application/json": {"schema": subscriptions.LIST_SCHEMA}},
        },
        **_ADMIN_RESPONSES,
    },
)
async def list_subscriptions(
    deps: Admin,
    window_s: Annotated[
        int, Query(ge=60, le=30 * 86_400, description="Seconds the `recent` figures cover")
    ] = subscriptions.RECENT_WINDOW_S,
) -> Response:
    return json(await subscriptions.list_subscriptions(deps, window_s))


_SCHEDULE_RESPONSES = {
    **_ADMIN_RESPONSES,
    **_errors({404: "The trigger has no schedule (or does not exist)"}),
}


@router.get(
    "/api/v1/schedules",
    summary="Every trigger's schedule: state, next fire time, last firing and skip",
    tags=["admin"],
    responses=_ADMIN_RESPONSES,
)
async def list_schedules(deps: Admin) -> Response:
    return json(await schedules.list_schedules(deps))


@router.get(
    "/api/v1/schedules/{trigger_id}",
    summary="One trigger's schedule",
    tags=["admin"],
    responses=_SCHEDULE_RESPONSES,
)
async def get_schedule(trigger_id: str, deps: Admin) -> Response:
    return json(await schedules.one_schedule(trigger_id, deps))


@router.post(
    "/api/v1/schedules/{trigger_id}/pause",
    summary="Pause a schedule: it fires nothing until resumed",
    tags=["admin"],
    responses=_SCHEDULE_RESPONSES,
)
async def pause_schedule(trigger_id: str, deps: Admin) -> Response:
    return json(await schedules.pause(trigger_id, deps))


@router.post(
    "/api/v1/schedules/{trigger_id}/resume",
    summary="Resume a schedule from its next due time (missed times are not made up)",
    tags=["admin"],
    responses=_SCHEDULE_RESPONSES,
)
async def resume_schedule(trigger_id: str, deps: Admin) -> Response:
    return json(await schedules.resume(trigger_id, deps))


_ONE_SUBSCRIPTION = {
    200: {
        "description": "The subscription, as the list shows it",
        "content": {
            "application/json": {
                "schema": subscriptions.LIST_SCHEMA["properties"]["subscriptions"]["items"]
            }
        },
    },
    **_ADMIN_RESPONSES,
    **_errors({404: "No such subscription"}),
}


@router.post(
    "/api/v1/subscriptions/{subscription_id}/enable",
    summary="Enable a subscription the notifier disabled (410, or failing deliveries)",
    tags=["admin"],
    responses={
        **_ONE_SUBSCRIPTION,
        **_errors({409: "Disabled in the config file (enabled: false): change the file"}),
    },
)
async def enable_subscription(subscription_id: str, deps: Admin) -> Response:
    return json(await subscriptions.enable(deps, subscription_id))


_ITEM_SCHEMA = subscriptions.LIST_SCHEMA["properties"]["subscriptions"]["items"]
_MADE_ONLY = _errors(
    {409: "The subscription is in the config file, which is read-only: change the file"}
)
_BAD_DEFINITION = _errors(
    {400: "The body is not a JSON object, or a field is invalid (the error names it)"}
)


@router.post(
    "/api/v1/subscriptions",
    status_code=201,
    summary="Make a subscription of a trigger, live without a restart (its secret shown once)",
    tags=["admin"],
    responses={
        201: {
            "description": "The subscription as the list shows it, plus `secret` (`whsec_` or"
            " `whsk_`; shown this once) and, for v1a, the receiver's `public_key` (`whpk_`)",
            "content": {
                "application/json": {
                    "schema": {
                        **_ITEM_SCHEMA,
                        "required": [*_ITEM_SCHEMA["required"], "secret"],
                    }
                }
            },
        },
        **_ADMIN_RESPONSES,
        **_BAD_DEFINITION,
        **_errors({413: "Body over HOOKRUN_MAX_BODY_BYTES"}),
    },
)
async def create_subscription(request: Request, deps: Admin) -> Response:
    body = await _json_body(request)
    return json(await subscriptions.create(deps, body), 201)


@router.patch(
    "/api/v1/subscriptions/{subscription_id}",
    summary="Change a subscription made through the API (url, statuses, headers)",
    tags=["admin"],
    responses={
        **_ONE_SUBSCRIPTION,
        **_MADE_ONLY,
        **_BAD_DEFINITION,
        **_errors({413: "Body over HOOKRUN_MAX_BODY_BYTES"}),
    },
)
async def change_subscription(subscription_id: str, request: Request, deps: Admin) -> Response:
    body = await _json_body(request)
    return json(await subscriptions.change(deps, subscription_id, body))


@router.delete(
    "/api/v1/subscriptions/{subscription_id}",
    status_code=204,
    summary="Remove a subscription made through the API",
    tags=["admin"],
    responses={
        204: {"description": "Removed: nothing more is delivered to it"},
        **_ADMIN_RESPONSES,
        **_errors({404: "No such subscription"}),
        **_MADE_ONLY,
    },
)
async def delete_subscription(subscription_id: str, deps: Admin) -> Response:
    await subscriptions.delete(deps, subscription_id)
    return Response(status_code=204)


@router.post(
    "/api/v1/subscriptions/{subscription_id}/rotate-secret",
    summary="A new secret; the old one keeps signing beside it for 24 hours",
    tags=["admin"],
    responses={
        200: {
            "description": "The new secret (shown this once) and when the previous one stops",
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "required": ["id", "secret", "previous_secret_expires_at"],
                        "properties": {
                            "id": {"type": "string"},
                            "secret": {"type": "string"},
                            "public_key": {"type": "string"},
                            "previous_secret_expires_at": {"type": "string", "format": "date-time"},
                        },
                    }
                }
            },
        },
        **_ADMIN_RESPONSES,
        **_errors({404: "No such subscription"}),
        **_MADE_ONLY,
    },
)
async def rotate_subscription_secret(subscription_id: str, deps: Admin) -> Response:
    return json(await subscriptions.rotate_secret(deps, subscription_id))


async def _json_body(request: Request, payload_depth: int | None = None) -> dict[str, Any]:
    """The body as a JSON object ({} when empty); 400 for anything else.

    With ``payload_depth``, a body whose ``payload`` nests deeper than that is refused (400)
    before it is parsed, as the gateway refuses such a body.
    """
    raw = await body_of(request)
    if not raw.strip():
        return {}
    if payload_depth is not None and json_too_deep(raw, payload_depth + 1):
        reason = f"payload nests deeper than HOOKRUN_MAX_JSON_DEPTH ({payload_depth})"
        raise ApiError(400, {"error": reason})
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, {"error": "body must be a JSON object"}) from exc
    if not isinstance(data, dict):
        raise ApiError(400, {"error": "body must be a JSON object"})
    return data


@router.get("/healthz", summary="Liveness and projection state")
async def healthz(request: Request) -> dict[str, Any]:
    """``kafka`` is true while the projection consumer runs; ``partitions`` it projects;
    ``ready`` as GET /readyz, and ``failing`` why the projection cannot store now."""
    projector = request.app.state.projector
    if projector is None:
        return {"ok": True, "kafka": True, "ready": True, "partitions": []}
    return {
        "ok": True,
        "kafka": projector.running,
        "ready": projector.ready,
        "failing": projector.failing,
        "partitions": [f"{tp.topic}/{tp.partition}" for tp in projector.assignment],
    }


@router.get(
    "/readyz",
    summary="Readiness: 503 until the projection caught up and can store",
    responses={503: {"description": "Not ready: still catching up, or storing fails"}},
)
async def readyz(request: Request, response: Response) -> dict[str, Any]:
    """200 once every partition was read to its end at assignment and storing works; 503
    before, and while the database or Kafka fails (the projection retries meanwhile)."""
    projector = request.app.state.projector
    if projector is None or projector.ready:
        return {"ready": True}
    response.status_code = 503
    return {"ready": False, "failing": projector.failing}
