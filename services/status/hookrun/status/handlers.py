"""The status rules: run info with the trigger's conditions and read-your-writes, and admin commands."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import orjson

from hookrun.config import HookrunConfig, InboundRequest, Trigger
from hookrun.config.conditions import check_conditions, recorded_launch
from hookrun.config.sealing import Sealer
from hookrun.events import RunCancelRequested, new_id, topics, tracing
from hookrun.events.kafka import KafkaUnavailable
from hookrun.events.limits import MAX_JSON_DEPTH, json_too_deep
from hookrun.events.runs import LaunchRequest
from hookrun.events.subscriptions import SubscriptionStates
from hookrun.status.adapters import EventLog, FakeScheduleBook, LogEnds, ScheduleBook
from hookrun.status.projector import Progress
from hookrun.status.store import SqlStore

log = logging.getLogger(__name__)

#: One answer for unknown and disabled triggers, failed conditions and a run_id outside the
#: signed body, as the launch gives; the log says which.
REJECTED = {"error": "request rejected"}
NOT_FOUND = {"error": "run not found"}


class ApiError(Exception):
    """An HTTP error answer: status, JSON body and headers."""

    def __init__(
        self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(body.get("error", status))
        self.status = status
        self.body = body
        self.headers = headers or {}


@dataclass
class Deps:
    """Everything the rules need, passed in by app.py (or a test)."""

    config: HookrunConfig
    store: SqlStore
    log: EventLog
    ends: LogEnds
    progress: Progress = field(default_factory=Progress)
    namespace: str = topics.NAMESPACE
    admin_token: str | None = None
    catch_up_timeout_s: float = 5.0
    retry_after_s: int = 2
    #: Deepest JSON body a test launch accepts (HOOKRUN_MAX_JSON_DEPTH).
    max_json_depth: int = MAX_JSON_DEPTH
    clock: Callable[[], float] = time.time
    new_run_id: Callable[[], str] = new_id
    #: What hookrun.subscriptions says (app.py follows the topic into it).
    subscriptions: SubscriptionStates = field(default_factory=SubscriptionStates)
    #: Seals the secrets of subscriptions made through the API (HOOKRUN_SECRETS_KEY).
    sealer: Sealer = field(default_factory=Sealer)
    #: The schedules' states (hookrun.schedules), for the admin API's schedules.
    schedules: ScheduleBook = field(default_factory=FakeScheduleBook)
    triggers: dict[str, Trigger] = field(init=False)

    def __post_init__(self) -> None:
        self.triggers = {t.id: t for t in self.config.triggers}


def run_id_from(request: InboundRequest, *, signed_body: bool = False) -> str | None:
    """``run_id`` from a POST's form or JSON body (top level), else from the query string.

    With ``signed_body`` (the trigger's conditions sign the body) only the body counts.
    """
    if request.method == "POST" and request.body:
        ctype = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
        data: Any = None
        if ctype == "application/x-www-form-urlencoded":
            data = dict(parse_qsl(request.body.decode("utf-8", "replace")))
        else:
            try:
                data = orjson.loads(request.body)
            except orjson.JSONDecodeError:
                data = dict(parse_qsl(request.body.decode("utf-8", "replace")))
        if isinstance(data, dict) and data.get("run_id") not in (None, ""):
            return str(data["run_id"])
    if signed_body:
        return None
    value = request.query.get("run_id")
    return value or None


async def catch_up(run_id: str, deps: Deps) -> bool:
    """Wait until the store holds everything on ``run_id``'s partition at call time.

    Offsets are read from the store, so this also works when another instance (sharing a
    PostgreSQL store) projects that partition. False when Kafka or the projection is too slow.
    """
    topic = topics.named(topics.RUNS, deps.namespace)
    try:
        part, end = await deps.ends.end_of(topic, run_id.encode())
    except KafkaUnavailable:
        return False
    deadline = time.monotonic() + deps.catch_up_timeout_s
    while await deps.store.next_offset(topic, part) < end:
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        await deps.progress.wait(min(left, 0.05))
    return True


def _lagging(deps: Deps) -> ApiError:
    return ApiError(
        503,
        {"error": "run store is catching up, retry later"},
        {"Retry-After": str(deps.retry_after_s)},
    )


def _rejected(trigger_id: str, request: InboundRequest, reason: str) -> ApiError:
    """Log why a run-info request was refused and return the uniform 400."""
    log.info(
        "run info for trigger %.200r rejected (%s from %s): %s",
        trigger_id,
        request.method,
        request.remote_addr,
        reason,
    )
    return ApiError(400, REJECTED)


async def run_info(trigger_id: str, request: InboundRequest, deps: Deps) -> dict[str, Any]:
    """Authenticate like the launch, then answer Valohai's run info for a run of this trigger.

    When a condition signs the body, run_id comes from that signed body only: the signature of
    an empty body is one constant per secret, so a run_id beside it (in the query string) would
    let anyone who saw it once read every run of the trigger.
    """
    trigger = deps.triggers.get(trigger_id)
    if trigger is None:
        raise _rejected(trigger_id, request, "unknown trigger")
    if not trigger.enabled:
        raise _rejected(trigger_id, request, "trigger is disabled")
    if trigger.signs_body:
        if request.method != "POST":
            raise _rejected(
                trigger_id, request, f"{request.method} has no body to sign; run_id needs a POST"
            )
        if "run_id" in request.query:
            raise _rejected(
                trigger_id, request, "run_id in the query string; it must be in the signed body"
            )
    verdict = check_conditions(trigger, request, deps.clock())
    if not verdict.ok:
        raise _rejected(trigger_id, request, verdict.reason)
    run_id = run_id_from(request, signed_body=trigger.signs_body)
    if run_id is None:
        raise ApiError(400, {"error": "run_id is required"})
    info = await deps.store.run_info(run_id)
    if info is None or info["status"] == "pending":
        caught_up = await catch_up(run_id, deps)
        info = await deps.store.run_info(run_id)
        if info is None and not caught_up:
            # Never a 404 for a run the gateway may have acknowledged a moment ago.
            raise _lagging(deps)
    if info is None or info["trigger_id"] != trigger_id:
        raise ApiError(404, NOT_FOUND)
    return {"status": info["status"], "result": info["result"]}


async def known_run(run_id: str, deps: Deps) -> dict[str, Any]:
    """The admin view of a run, caught up first if it is not in the store yet."""
    detail = await deps.store.run_detail(run_id)
    if detail is None:
        caught_up = await catch_up(run_id, deps)
        detail = await deps.store.run_detail(run_id)
        if detail is None:
            raise _lagging(deps) if not caught_up else ApiError(404, NOT_FOUND)
    return detail


def unavailable(what: str, deps: Deps) -> ApiError:
    """503 with Retry-After: ``what`` (Kafka's part of the answer) cannot be had now."""
    return ApiError(
        503, {"error": f"{what} unavailable, retry later"}, {"Retry-After": str(deps.retry_after_s)}
    )


async def appended(append: Awaitable[None], deps: Deps) -> None:
    """Wait for an append to the event log; 503 with Retry-After when Kafka does not ack it."""
    try:
        await append
    except KafkaUnavailable as exc:
        raise unavailable("event log", deps) from exc


async def cancel(run_id: str, reason: str, deps: Deps) -> dict[str, Any]:
    """Append RunCancelRequested for a run that has not finished."""
    run = await known_run(run_id, deps)
    if run["status"] is not None:
        raise ApiError(409, {"error": f"run already finished ({run['status']})"})
    trace = await deps.store.run_trace(run_id)
    cancel = RunCancelRequested(
        run_id=run_id, requested_by="admin", reason=reason, **tracing.fields(trace)
    )
    await appended(deps.log.append([cancel]), deps)
    return {"run_id": run_id, "cancel_requested": True}


async def launch_test_run(
    trigger_id: str,
    request: InboundRequest,
    deps: Deps,
    *,
    is_test: bool = True,
    account: str | None = None,
    replay_of: str | None = None,
) -> dict[str, Any]:
    """Launch like the gateway does, skipping conditions: a test launch, or a replay.

    A JSON body nested deeper than HOOKRUN_MAX_JSON_DEPTH is refused (400), as the gateway
    refuses it: no event could carry it through the run.
    """
    trigger = deps.triggers.get(trigger_id)
    if trigger is None:
        raise ApiError(404, {"error": f"trigger {trigger_id!r} not found"})
    if not trigger.enabled:
        raise ApiError(409, {"error": f"trigger {trigger_id!r} is disabled"})
    if json_too_deep(request.body, deps.max_json_depth):
        reason = f"JSON body nests deeper than HOOKRUN_MAX_JSON_DEPTH ({deps.max_json_depth})"
        raise ApiError(400, {"error": reason})
    run_id = deps.new_run_id()
    launched = recorded_launch(
        trigger,
        request,
        source=deps.log.source,
        run_id=run_id,
        config_version=deps.config.config_version,
        is_test=is_test,
        account=account,
        replay_of=replay_of,
        trace=tracing.for_launch(request.headers),
    )
    await appended(deps.log.append_records([launched]), deps)
    return {"run_id": run_id, "isTest": is_test}


#: ``replay``'s payload argument when the body named none: the original request body is reused.
ORIGINAL_PAYLOAD: Any = object()


async def replay(run_id: str, payload: Any, deps: Deps) -> dict[str, Any]:
    """Launch the run's trigger again with its request, or with ``payload`` as a JSON body.

    Conditions are skipped (the admin token authorised it); the new run keeps the original's
    ``is_test`` and ``account`` and records ``replay_of``. The trigger is performed as the
    current config defines it.
    """
    await known_run(run_id, deps)
    launch = await deps.store.launch_of(run_id)
    if launch is None:
        raise ApiError(404, NOT_FOUND)
    trigger_id = str(launch["trigger_id"])
    if trigger_id not in deps.triggers:
        raise ApiError(409, {"error": f"trigger {trigger_id!r} is no longer in the config"})
    original = LaunchRequest.model_validate(launch["request"])
    headers = dict(original.headers)
    body = original.body()
    if payload is not ORIGINAL_PAYLOAD:
        body = orjson.dumps(payload)
        headers.pop("content-length", None)
        headers["content-type"] = "application/json"
    request = InboundRequest(
        method=original.method,
        path=original.path,
        headers=headers,
        query=original.query,
        body=body,
        remote_addr=original.remote_addr,
    )
    launched = await launch_test_run(
        trigger_id,
        request,
        deps,
        is_test=bool(launch.get("is_test")),
        account=launch.get("account"),
        replay_of=run_id,
    )
    return {"run_id": launched["run_id"], "replay_of": run_id}
