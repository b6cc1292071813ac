"""The launch rules: authenticate, dedupe, append TriggerLaunched, answer with the trigger's response."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from hookrun.config import HookrunConfig, InboundRequest, Trigger
from hookrun.config.conditions import Verdict, check_conditions, delivery_id, recorded_launch
from hookrun.config.filters import filter_miss
from hookrun.config.templating import render_response
from hookrun.events import InboundDeliveryRecorded, TriggerLogged, encode, new_id, tracing
from hookrun.events.kafka import KafkaUnavailable
from hookrun.events.limits import MAX_JSON_DEPTH, json_too_deep
from hookrun.gateway.adapters import DeliveryIndex, EventLog
from hookrun.gateway.metrics import LaunchCounter
from hookrun.gateway.ratelimit import TokenBucket, retry_after
from hookrun.gateway.sampling import DEFAULT_LIMIT, DEFAULT_WINDOW_S, TriggerLogSampler

#: One answer for unknown, disabled and unauthenticated launches, so it reveals nothing.
REJECTED_BODY = b'{"error":"launch rejected"}'
#: The answer to an authenticated launch that the trigger's filter leaves out.
FILTERED_BODY = b'{"ok":true,"filtered":true}'
RATE_LIMITED_BODY = b'{"error":"rate limit exceeded, retry later"}'


@dataclass(frozen=True)
class Reply:
    """What the HTTP layer sends back."""

    status: int
    body: bytes
    content_type: str = "application/json"
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass
class Deps:
    """Everything the launch rules need, passed in by app.py (or a test)."""

    config: HookrunConfig
    log: EventLog
    deliveries: DeliveryIndex
    retry_after_s: int = 5
    #: Deepest JSON body accepted (HOOKRUN_MAX_JSON_DEPTH); a deeper one is rejected.
    max_json_depth: int = MAX_JSON_DEPTH
    clock: Callable[[], float] = time.time
    #: The rate limits' clock.
    monotonic: Callable[[], float] = time.monotonic
    new_run_id: Callable[[], str] = new_id
    #: Refused launches logged one by one per source and window, past it counted
    #: (HOOKRUN_REJECTION_LOG_LIMIT, HOOKRUN_REJECTION_LOG_WINDOW_S).
    rejection_log_limit: int = DEFAULT_LIMIT
    rejection_log_window_s: float = DEFAULT_WINDOW_S
    triggers: dict[str, Trigger] = field(init=False)
    trigger_log: TriggerLogSampler = field(init=False)
    #: The config's version, read once: a pydantic private attribute is slow to read.
    config_version: str = field(init=False)
    #: Launches counted for /metrics and logged (accepted at INFO, the others at DEBUG).
    launches: LaunchCounter = field(init=False)
    #: The token bucket of each trigger that has a ``rate_limit``, by trigger id.
    buckets: dict[str, TokenBucket] = field(init=False)

    #: Launches of a delivery id being appended now, by ``<trigger id>/<delivery id>``: the
    #: run id each one answered (None: 503), for the copies that arrive meanwhile.
    inflight: dict[str, asyncio.Future[str | None]] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        self.triggers = {t.id: t for t in self.config.triggers}
        self.trigger_log = TriggerLogSampler(
            self.log.append_soon,
            self.triggers,
            limit=self.rejection_log_limit,
            window_s=self.rejection_log_window_s,
        )
        self.config_version = self.config.config_version
        self.launches = LaunchCounter(self.triggers)
        now = self.monotonic()
        self.buckets = {
            t.id: TokenBucket(t.rate_limit, now) for t in self.triggers.values() if t.rate_limit
        }


async def launch(
    trigger_id: str, request: InboundRequest, deps: Deps, *, is_test: bool = False
) -> Reply:
    """Handle one launch request and return the reply.

    202 only once TriggerLaunched is acknowledged by Kafka; 400 (the same body every time) for
    an unknown or disabled trigger or a failed condition; 200 ``filtered`` for an authenticated
    launch that the trigger's filter leaves out; 429 with Retry-After past the trigger's rate
    limit; 503 with Retry-After when Kafka does not acknowledge. A redelivery of an accepted
    delivery id gets the original run id back.
    """
    trigger = deps.triggers.get(trigger_id)
    if trigger is None:
        return reject(trigger_id, request, deps, "unknown trigger")
    if not trigger.enabled:
        return reject(trigger_id, request, deps, "trigger is disabled")
    verdict = check_conditions(trigger, request, deps.clock())
    if not verdict.ok:
        return reject(trigger_id, request, deps, verdict.reason)
    # After the conditions, so that only an authenticated sender makes the gateway look.
    if json_too_deep(request.body, deps.max_json_depth):
        reason = f"JSON body nests deeper than HOOKRUN_MAX_JSON_DEPTH ({deps.max_json_depth})"
        return reject(trigger_id, request, deps, reason)
    if trigger.filter is not None:
        miss = filter_miss(trigger, request)
        if miss is not None:
            return _filtered(trigger, request, deps, miss)
    delivery = delivery_id(trigger, request)
    if delivery is not None:
        return await _launch_delivery(trigger, request, deps, delivery, verdict, is_test)
    limited = _over_rate_limit(trigger, request, deps)
    if limited is not None:
        return limited
    run_id = deps.new_run_id()
    launched = recorded_launch(
        trigger,
        request,
        source=deps.log.source,
        run_id=run_id,
        config_version=deps.config_version,
        is_test=is_test,
        account=verdict.account,
        account_metadata=verdict.account_metadata,
        trace=tracing.for_launch(request.headers),
    )
    started = time.perf_counter()
    try:
        await deps.log.append_records([launched])
    except KafkaUnavailable:
        return unavailable(deps, trigger.id)
    deps.launches.accepted(trigger.id, run_id, time.perf_counter() - started, together=False)
    return accepted(trigger, run_id)


async def _launch_delivery(
    trigger: Trigger,
    request: InboundRequest,
    deps: Deps,
    delivery: str,
    verdict: Verdict,
    is_test: bool,
) -> Reply:
    """A launch with a provider delivery id: one run per delivery id within the window.

    A copy that arrives while the first is still being appended waits for the first one's
    outcome and answers the same run id (or the same 503): it never appends a run of its own.
    TriggerLaunched and the dedupe record are committed together, so no failure between them
    leaves a run that a retry of the delivery does not find (decision 0033).
    """
    key = f"{trigger.id}/{delivery}"
    first = deps.inflight.get(key)
    if first is not None:
        original = await asyncio.shield(first)
        if original is None:
            return unavailable(deps, trigger.id)
        return _duplicate(trigger, request, deps, delivery, original)
    outcome: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
    deps.inflight[key] = outcome
    answered: str | None = None
    try:
        original = await deps.deliveries.find(trigger.id, delivery)
        if original is not None:
            answered = original
            return _duplicate(trigger, request, deps, delivery, original)
        # Only a delivery that would start a run takes a token: a sender retrying one it was
        # not sure about gets its run id back, even past the limit. (A copy that waited on a
        # rate-limited first one answers 503, retry later, as after a failed first.)
        limited = _over_rate_limit(trigger, request, deps)
        if limited is not None:
            return limited
        run_id = deps.new_run_id()
        launched = recorded_launch(
            trigger,
            request,
            source=deps.log.source,
            run_id=run_id,
            config_version=deps.config_version,
            delivery_id=delivery,
            is_test=is_test,
            account=verdict.account,
            account_metadata=verdict.account_metadata,
            trace=tracing.for_launch(request.headers),
        )
        record = InboundDeliveryRecorded(trigger_id=trigger.id, delivery_id=delivery, run_id=run_id)
        started = time.perf_counter()
        await deps.log.append_together([launched, encode(record, source=deps.log.source)])
        deps.launches.accepted(trigger.id, run_id, time.perf_counter() - started, together=True)
        deps.deliveries.remember(trigger.id, delivery, run_id)
        answered = run_id
        return accepted(trigger, run_id)
    except KafkaUnavailable:
        return unavailable(deps, trigger.id)
    finally:
        del deps.inflight[key]
        outcome.set_result(answered)


def _duplicate(
    trigger: Trigger, request: InboundRequest, deps: Deps, delivery: str, original: str
) -> Reply:
    """The answer to a redelivery: the original run id, and a ``duplicate`` log entry."""
    reason = f"redelivery of {delivery}"
    entry = _logged(trigger.id, request, "duplicate", reason, 202, delivery, original)
    deps.trigger_log.offer(entry)
    deps.launches.refused(trigger.id, "duplicate", reason, original)
    return accepted(trigger, original)


def _filtered(trigger: Trigger, request: InboundRequest, deps: Deps, reason: str) -> Reply:
    """200 ``filtered``: the sender is authenticated, the launch is not one the trigger wants."""
    deps.trigger_log.offer(_logged(trigger.id, request, "filtered", reason, 200))
    deps.launches.refused(trigger.id, "filtered", reason, None)
    return Reply(200, FILTERED_BODY)


def _over_rate_limit(trigger: Trigger, request: InboundRequest, deps: Deps) -> Reply | None:
    """Take a token of the trigger's rate limit, or return the 429 when none is left."""
    if trigger.rate_limit is None:
        return None
    wait_s = deps.buckets[trigger.id].take(deps.monotonic())
    return _rate_limited(trigger, request, deps, wait_s) if wait_s else None


def _rate_limited(trigger: Trigger, request: InboundRequest, deps: Deps, wait_s: float) -> Reply:
    """429 with Retry-After (seconds until this instance's bucket has a token), no run."""
    limit = trigger.rate_limit
    assert limit is not None
    reason = (
        f"over the rate limit of {limit.launches} launches per {limit.per_s:g} s"
        f" (burst {limit.capacity}) of this gateway instance"
    )
    deps.trigger_log.offer(_logged(trigger.id, request, "rate_limited", reason, 429))
    deps.launches.refused(trigger.id, "rate_limited", reason, None)
    return Reply(429, RATE_LIMITED_BODY, headers={"Retry-After": retry_after(wait_s)})


def unavailable(deps: Deps, trigger_id: str) -> Reply:
    """503 with Retry-After: nothing durable, no run id handed out."""
    deps.launches.refused(trigger_id, "unavailable", "kafka did not acknowledge", None)
    return Reply(
        503,
        b'{"error":"event log unavailable, retry later"}',
        headers={"Retry-After": str(deps.retry_after_s)},
    )


def accepted(trigger: Trigger, run_id: str) -> Reply:
    """The 202 reply carrying the trigger's response template filled with ``run_id``."""
    content_type, body = render_response(trigger.response, run_id)
    return Reply(202, body, content_type)


def reject(
    trigger_id: str, request: InboundRequest, deps: Deps, reason: str, status: int = 400
) -> Reply:
    """Record why a launch was refused in the trigger log and return the uniform reply.

    Past a rate per source the entry is counted rather than logged (``sampling``).
    """
    deps.trigger_log.offer(_logged(trigger_id, request, "rejected", reason, status))
    deps.launches.refused(trigger_id, "rejected", reason, None)
    body = REJECTED_BODY if status == 400 else b'{"error":"request body too large"}'
    return Reply(status, body)


def _logged(
    trigger_id: str,
    request: InboundRequest,
    outcome: str,
    reason: str,
    status: int,
    delivery: str | None = None,
    run_id: str | None = None,
) -> TriggerLogged:
    return TriggerLogged(
        trigger_id=trigger_id[:200],
        outcome=outcome,  # type: ignore[arg-type]
        reason=reason,
        status_code=status,
        method=request.method,
        remote_addr=request.remote_addr,
        content_length=len(request.body),
        delivery_id=delivery,
        run_id=run_id,
    )
