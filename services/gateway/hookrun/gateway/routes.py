"""HTTP routes of the gateway: thin request -> handler -> response code."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from hookrun.config import InboundRequest
from hookrun.gateway import handlers

router = APIRouter()


class BodyTooLarge(Exception):
    """The request body is over HOOKRUN_MAX_BODY_BYTES."""


async def read_body(request: Request, limit: int) -> bytes:
    """Read the body, refusing one over ``limit`` bytes before it is read whole.

    A declared Content-Length over the limit is refused without reading anything; a chunked
    body is refused as soon as the bytes read pass the limit.
    """
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def inbound(request: Request, body: bytes) -> InboundRequest:
    """The framework-free view of a request that conditions check."""
    return InboundRequest(
        method=request.method,
        path=request.url.path,
        headers=request.headers,
        query=dict(request.query_params),
        body=body,
        remote_addr=request.client.host if request.client else None,
    )


@router.post(
    "/api/v0/launch/{trigger_id}/",
    status_code=202,
    summary="Launch a trigger",
    responses={
        202: {"description": "Accepted: the trigger's response with {run_id} filled in"},
        400: {
            "description": "Unknown or disabled trigger, or a condition failed (one body for all)"
        },
        413: {"description": "Body over HOOKRUN_MAX_BODY_BYTES"},
        503: {"description": "Kafka did not acknowledge; retry after Retry-After seconds"},
    },
)
@router.post("/api/v0/launch/{trigger_id}", include_in_schema=False)
async def launch(trigger_id: str, request: Request) -> Response:
    """Authenticate the webhook, append TriggerLaunched, answer with the run id."""
    deps: handlers.Deps = request.app.state.deps
    try:
        body = await read_body(request, request.app.state.max_body_bytes)
    except BodyTooLarge:
        reply = handlers.reject(trigger_id, inbound(request, b""), deps, "body too large", 413)
    else:
        reply = await handlers.launch(trigger_id, inbound(request, body), deps)
    return Response(reply.body, reply.status, dict(reply.headers), media_type=reply.content_type)


@router.get("/healthz", summary="Liveness and Kafka readiness")
async def healthz(request: Request) -> dict[str, bool]:
    """``kafka`` is true once the producer is connected."""
    publisher = request.app.state.publisher
    return {"ok": True, "kafka": bool(publisher is None or publisher.ready)}
