"""Delivery rules: which deliveries a run causes, one attempt's outcome, the retry schedule.

State lives in a :class:`Book` per partition, rebuilt from the partition's events: every
attempt is a DeliveryAttempted carrying ``next_attempt_at``, so replaying the events tells a
restarted notifier exactly which deliveries still wait and when they are due.
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import urlsplit

from hookrun.config import HookrunConfig, UnresolvedEnvError, resolve_env_refs
from hookrun.config.model.base import SigningKeys, signing_keys
from hookrun.config.sealing import Sealer
from hookrun.events import topics, tracing
from hookrun.events.base import Event
from hookrun.events.maps import EventMap
from hookrun.events.notifications import (
    DeliveryAttempted,
    DeliveryCanceled,
    DeliveryExhausted,
    RedeliveryRequested,
    SubscriptionDisabled,
    SubscriptionHealthChanged,
    SubscriptionSaved,
)
from hookrun.events.runs import (
    ActionCompleted,
    ExecutionCreated,
    ExecutionFinished,
    ExecutionHeartbeat,
    ExecutionStarted,
    PipelineCreated,
    PipelineFinished,
    PipelineNodeSkipped,
    RunCancelRequested,
    RunFinished,
    RunStarted,
    TriggerLaunched,
)
from hookrun.events.subscriptions import SUBSCRIPTION_TYPES, SubscriptionStates, subscription_id
from hookrun.events.tracing import TraceContext
from hookrun.notifier.adapters import Sender, SendResult
from hookrun.notifier.payload import notification_body
from hookrun.notifier.signing import message_id, signed_headers

#: How many delivered runs a Book (a partition) remembers for redelivery without a scan of the
#: partition: each is a Delivered (its offset and attempt counts, a few hundred bytes), not its
#: RunFinished; an older run's redelivery reads its partition instead.
REMEMBERED_RUNS = 10_000

log = logging.getLogger("hookrun.notifier")


@dataclass(frozen=True)
class Subscription:
    """One entry of a trigger's ``notifications``; the id is stable while the URL is."""

    id: str
    trigger_id: str
    url: str
    keys: SigningKeys
    enabled: bool
    #: Run statuses delivered; None: all.
    statuses: frozenset[str] | None = None
    #: Extra headers of every delivery (checked: none a signature or hop-by-hop one).
    headers: tuple[tuple[str, str], ...] = ()
    #: ``config`` (the file's) or ``api`` (made through the admin API, on the topic).
    source: str = "config"

    def wants(self, run: RunFinished) -> bool:
        """Whether a run that ended so is delivered to this subscription."""
        return self.statuses is None or run.status.value in self.statuses


def subscriptions_of(config: HookrunConfig, trigger_id: str) -> list[Subscription]:
    """The subscriptions a trigger's runs are delivered to (disabled ones included)."""
    trigger = config.trigger(trigger_id)
    if trigger is None:
        return []
    return [
        Subscription(
            subscription_id(trigger_id, n.url),
            trigger_id,
            n.url,
            n.signing_keys,
            n.enabled,
            None if n.statuses is None else frozenset(n.statuses),
            tuple(n.headers.items()),
        )
        for n in trigger.notifications
    ]


@dataclass
class Delivery:
    """One run's notification to one subscription, across all of its attempts."""

    run_id: str
    #: The run's RunFinished; None for a redelivery of a run the Book keeps only as Delivered
    #: (read again from ``offset`` when it is attempted).
    run: RunFinished | None
    #: Offset of the run's RunFinished: replaying from there rebuilds this delivery.
    offset: int
    subscription: Subscription
    message_id: str
    attempts: int = 0
    #: Attempts made before the current round (a redelivery starts the schedule again).
    round_start: int = 0
    #: Epoch seconds the next attempt is due; ignored once ``done``.
    next_at: float = 0.0
    done: bool = False
    in_flight: bool = False
    revoked: bool = False
    timer: Any = None
    #: False for a redelivery asked for this subscription by name: it goes despite the
    #: subscription's ``statuses``.
    filter_applies: bool = True
    #: The hookrun.runs partition the delivery belongs to.
    partition: int = -1

    @property
    def key(self) -> tuple[str, str]:
        return (self.run_id, self.subscription.id)


@dataclass
class Delivered:
    """What a Book keeps of a run once every delivery of it is done: enough to redeliver it."""

    #: Offset of the run's RunFinished in the Book's partition.
    offset: int
    trigger_id: str
    #: Subscription id -> attempts made: a redelivery numbers its attempts on from there.
    attempts: dict[str, int] = field(default_factory=dict)


async def _no_run(partition: int, offset: int) -> RunFinished | None:
    return None


@dataclass
class Deps:
    """What the handlers need: the config, the policy and the live view of disabled ones."""

    config: HookrunConfig
    schedule: tuple[float, ...]
    jitter: float
    sender: Sender
    #: What hookrun.subscriptions says about each subscription (disabled ones, ...).
    states: SubscriptionStates = field(default_factory=SubscriptionStates)
    now: Callable[[], float] = time.time
    rand: Callable[[], float] = random.random
    #: The RunFinished at (partition, offset) of the runs topic, None if it is not there.
    load_run: Callable[[int, int], Awaitable[RunFinished | None]] = _no_run
    #: Opens the secrets of subscriptions made through the admin API (HOOKRUN_SECRETS_KEY).
    sealer: Sealer = field(default_factory=Sealer)
    _subscriptions: dict[str, tuple[HookrunConfig, list[Subscription]]] = field(
        default_factory=dict, repr=False
    )

    _made: dict[tuple[str, tuple[str, ...]], Subscription] = field(default_factory=dict, repr=False)

    def subscriptions(self, trigger_id: str) -> list[Subscription]:
        """:func:`subscriptions_of` the config, remembered per trigger of the config (the config
        is frozen; a run of a trigger it lacks has none, and is not remembered), then those
        made through the admin API for the trigger."""
        cached = self._subscriptions.get(trigger_id)
        if cached is None or cached[0] is not self.config:
            cached = (self.config, subscriptions_of(self.config, trigger_id))
            if self.config.trigger(trigger_id) is None:
                return cached[1]
            self._subscriptions[trigger_id] = cached
        if not self.states.defined:
            return cached[1]
        made = (self.made(d) for d in self.states.defined.values() if d.trigger_id == trigger_id)
        return cached[1] + [sub for sub in made if sub is not None]

    def made(self, saved: SubscriptionSaved) -> Subscription | None:
        """The subscription a SubscriptionSaved defines, signing with its secrets that have not
        expired; None (logged) when its definition cannot be sent (a header's ``${env:}``
        unset here)."""
        now = self.now()
        secrets = tuple(
            s.secret
            for s in saved.secrets
            if s.expires_at is None or s.expires_at.timestamp() > now
        )
        key = (saved.event_id, secrets)
        sub = self._made.get(key)
        if sub is None:
            try:
                headers = {n: resolve_env_refs(v, os.environ) for n, v in saved.headers.items()}
                keys = signing_keys([self.sealer.unseal(s) for s in secrets])
            except (UnresolvedEnvError, ValueError) as exc:
                log.error("subscription %s cannot be delivered to: %s", saved.subscription_id, exc)
                return None
            if len(self._made) > 4096:
                self._made.clear()
            sub = self._made[key] = Subscription(
                saved.subscription_id,
                saved.trigger_id,
                saved.url,
                keys,
                True,
                None if saved.statuses is None else frozenset(saved.statuses),
                tuple(headers.items()),
                "api",
            )
        return sub

    def current(self, sub: Subscription) -> Subscription:
        """``sub`` as it stands now. One made through the admin API may have been changed (its
        URL, headers, statuses, secrets) or its old secret may have expired since a delivery
        to it was planned; a config subscription is fixed for the process."""
        if sub.source != "api":
            return sub
        saved = self.states.defined.get(sub.id)
        if saved is None:
            return sub  # deleted: is_disabled says so
        return self.made(saved) or sub

    def is_disabled(self, sub: Subscription) -> bool:
        """Whether nothing is delivered to ``sub``: disabled in the config or on
        hookrun.subscriptions (under this config version), or deleted through the admin API."""
        if not sub.enabled:
            return True
        if sub.source == "api" and sub.id not in self.states.defined:
            return True  # deleted
        return self.states.disabled_under(sub.id, self.config.config_version) is not None


@dataclass
class Book:
    """The deliveries of one partition, and the runs seen there (for redelivery).

    A run's RunFinished and deliveries are held while a delivery of it is not done; once all
    are, only a :class:`Delivered` is kept, among the last ``REMEMBERED_RUNS``.
    """

    #: The hookrun.runs partition (its deliveries belong to it).
    partition: int = -1
    deliveries: dict[tuple[str, str], Delivery] = field(default_factory=dict)
    #: Runs with a delivery not done yet: their RunFinished and its offset.
    runs: dict[str, tuple[RunFinished, int]] = field(default_factory=dict)
    #: Runs whose deliveries are all done, the most recently settled last.
    delivered: OrderedDict[str, Delivered] = field(default_factory=OrderedDict)
    #: Deliveries whose state changed and may need scheduling.
    touched: list[Delivery] = field(default_factory=list)
    #: Redeliveries asked for runs this book does not know: (request, its offset).
    unknown: list[tuple[RedeliveryRequested, int]] = field(default_factory=list)
    #: The keys of ``deliveries`` by run id, to settle a run's without scanning them all.
    keys_of_run: dict[str, list[tuple[str, str]]] = field(default_factory=dict)

    def pending(self) -> list[Delivery]:
        return [d for d in self.deliveries.values() if not d.done]

    def low_watermark(self, next_offset: int) -> int:
        """The offset to resume from so that every unfinished delivery is rebuilt."""
        return min((d.offset for d in self.pending()), default=next_offset)

    def run_of(self, run_id: str) -> tuple[RunFinished | None, int, str] | None:
        """A run of this Book: its RunFinished (None when only its Delivered is kept: read it
        again from its offset when needed), that offset and its trigger id; None if unknown."""
        held, record = self.runs.get(run_id), self.delivered.get(run_id)
        if held is not None:
            return held[0], held[1], held[0].trigger_id
        if record is not None:
            return None, record.offset, record.trigger_id
        return None

    def remember(self, run: RunFinished, offset: int) -> None:
        """Hold ``run`` until its deliveries are done (the first offset seen stays)."""
        self.runs.setdefault(run.run_id, (run, offset))

    def settle(self, run_id: str) -> None:
        """Once no delivery of the run is pending, drop its RunFinished and deliveries and keep
        a Delivered of it instead."""
        keys = self.keys_of_run.get(run_id, [])
        if any(not self.deliveries[key].done for key in keys):
            return
        held = self.runs.pop(run_id, None)
        record = self.delivered.pop(run_id, None)
        if record is None and held is not None:
            record = Delivered(held[1], held[0].trigger_id)
        elif record is None and keys:
            first = self.deliveries[keys[0]]
            record = Delivered(first.offset, first.subscription.trigger_id)
        if record is None:
            return
        for key in self.keys_of_run.pop(run_id, ()):
            record.attempts[key[1]] = self.deliveries.pop(key).attempts
        self.delivered[run_id] = record
        while len(self.delivered) > REMEMBERED_RUNS:
            self.delivered.popitem(last=False)


def retry_delay(
    schedule: Sequence[float],
    attempts_in_round: int,
    jitter: float,
    rand: Callable[[], float],
    retry_after_s: float | None = None,
) -> float | None:
    """Seconds until the next attempt after ``attempts_in_round`` failed ones; None: give up.

    ``schedule[i]`` is the wait before attempt ``i + 1`` (Svix: 0, 5 s, 5 min, ...). Jitter
    spreads it by up to ±``jitter`` so retries of many deliveries do not stampede; a larger
    Retry-After from the subscriber wins, capped at a day.
    """
    if attempts_in_round >= len(schedule):
        return None
    base = schedule[attempts_in_round]
    delay = base * (1 + jitter * (2 * rand() - 1))
    if retry_after_s is not None:
        delay = max(delay, min(retry_after_s, 86_400.0))
    return max(0.0, delay)


def _deliver_to(
    book: Book,
    run_id: str,
    run: RunFinished | None,
    offset: int,
    sub: Subscription,
    at: float,
    attempts: int = 0,
) -> Delivery:
    delivery = book.deliveries.get((run_id, sub.id))
    if delivery is None:
        delivery = Delivery(
            run_id,
            run,
            offset,
            sub,
            message_id(run_id, sub.id),
            attempts=attempts,
            next_at=at,
            partition=book.partition,
        )
        book.deliveries[delivery.key] = delivery
        book.keys_of_run.setdefault(run_id, []).append(delivery.key)
    return delivery


async def plan_deliveries(event: Event, offset: int, book: Book, deps: Deps) -> list[Event]:
    """RunFinished: one delivery per enabled subscription, unless attempts already exist."""
    assert isinstance(event, RunFinished)
    if event.run_id in book.delivered:  # the same RunFinished again (at-least-once)
        return []
    book.remember(event, offset)
    at = event.occurred_at.timestamp()
    for sub in deps.subscriptions(event.trigger_id):
        if (
            not sub.wants(event)
            or deps.is_disabled(sub)
            or (event.run_id, sub.id) in book.deliveries
        ):
            continue
        book.touched.append(_deliver_to(book, event.run_id, event, offset, sub, at))
    book.settle(event.run_id)  # nothing to deliver
    return []


async def record_attempt(event: Event, offset: int, book: Book, deps: Deps) -> list[Event]:
    """DeliveryAttempted: advance the delivery (idempotent: older attempts change nothing)."""
    assert isinstance(event, DeliveryAttempted)
    delivery = book.deliveries.get((event.run_id, event.subscription_id))
    if delivery is None:
        delivery = _unplanned(event, book, deps)
    if delivery is None or event.attempt <= delivery.attempts:
        return []
    delivery.attempts = event.attempt
    if event.next_attempt_at is None:
        delivery.done = True
        book.settle(delivery.run_id)
    else:
        delivery.next_at = event.next_attempt_at.timestamp()
        book.touched.append(delivery)
    return []


def _unplanned(event: DeliveryAttempted, book: Book, deps: Deps) -> Delivery | None:
    """The delivery of a retry that the replayed RunFinished did not plan, because its
    subscription was changed to leave the run out, disabled or deleted since: kept, so that it
    ends canceled (:func:`why_canceled`) rather than waiting for ever in the record. None when
    no retry follows the attempt or the run is not in the Book."""
    known = book.run_of(event.run_id)
    if event.next_attempt_at is None or known is None:
        return None
    run, run_offset, trigger_id = known
    sub = next((s for s in deps.subscriptions(trigger_id) if s.id == event.subscription_id), None)
    if sub is None:
        # Known only by the id and URL the attempt names: deleted (or not defined yet, in
        # which case Deps.current finds it by the time the retry is due).
        sub = Subscription(
            event.subscription_id, trigger_id, event.url, signing_keys([]), False, source="api"
        )
    return _deliver_to(book, event.run_id, run, run_offset, sub, 0.0)


async def record_closed(event: Event, offset: int, book: Book, deps: Deps) -> list[Event]:
    """DeliveryExhausted, DeliveryCanceled: the delivery is over."""
    assert isinstance(event, DeliveryExhausted | DeliveryCanceled)
    delivery = book.deliveries.get((event.run_id, event.subscription_id))
    if delivery is not None:
        delivery.done = True
        book.settle(delivery.run_id)
    return []


async def plan_redelivery(event: Event, offset: int, book: Book, deps: Deps) -> list[Event]:
    """RedeliveryRequested: start the schedule again for one or every subscription of the run."""
    assert isinstance(event, RedeliveryRequested)
    known = book.run_of(event.run_id)
    if known is None:
        book.unknown.append((event, offset))
        return []
    run, run_offset, trigger_id = known
    record = book.delivered.get(event.run_id)
    at = event.occurred_at.timestamp()
    for sub in deps.subscriptions(trigger_id):
        if event.subscription_id not in (None, sub.id) or deps.is_disabled(sub):
            continue
        if event.subscription_id is None and not _wanted(sub, run, record):
            continue
        made = record.attempts.get(sub.id, 0) if record is not None else 0
        delivery = _deliver_to(book, event.run_id, run, run_offset, sub, at, made)
        delivery.filter_applies = event.subscription_id is None
        if delivery.done or delivery.attempts:
            # Restart the round: the schedule counts from here, the webhook-id stays.
            delivery.round_start = delivery.attempts
            delivery.done = False
            delivery.next_at = at
        book.touched.append(delivery)
    book.settle(event.run_id)  # nothing to redeliver
    return []


def _wanted(sub: Subscription, run: RunFinished | None, record: Delivered | None) -> bool:
    """Whether a redelivery of every subscription includes ``sub``: its statuses filter let the
    run through (a run kept only as Delivered: the subscription was attempted)."""
    if run is not None:
        return sub.wants(run)
    return sub.statuses is None or (record is not None and sub.id in record.attempts)


CancelCause = Literal["filtered", "deleted", "disabled"]


def why_canceled(delivery: Delivery, deps: Deps) -> tuple[CancelCause, str] | None:
    """Why the delivery's next attempt is not to be made, as (cause, reason); None: make it.

    As in Svix and Hookdeck, a subscription's state and filter hold when an attempt is due, not
    only when the run finished: one deleted, disabled, or changed so that its ``statuses`` leave
    the run out since the delivery was planned gets no more attempts. The filter is checked
    once the run is known (a redelivery of an old run reads it first).
    """
    sub = deps.current(delivery.subscription)
    if sub.source == "api" and sub.id not in deps.states.defined:
        return "deleted", "the subscription was deleted"
    if deps.is_disabled(sub):
        held = deps.states.disabled_under(sub.id, deps.config.config_version)
        return "disabled", "the subscription is disabled" + (f": {held.reason}" if held else "")
    run = delivery.run
    if run is not None and delivery.filter_applies and not sub.wants(run):
        listed = ", ".join(sorted(sub.statuses or ()))
        return "filtered", f"the subscription's statuses ({listed}) no longer include {run.status}"
    return None


def _canceled(delivery: Delivery, why: tuple[CancelCause, str]) -> DeliveryCanceled:
    run, sub = delivery.run, delivery.subscription
    return DeliveryCanceled(
        **tracing.fields(run.trace if run is not None else None),
        run_id=delivery.run_id,
        message_id=delivery.message_id,
        subscription_id=sub.id,
        url=sub.url,
        attempts=delivery.attempts,
        cause=why[0],
        reason=why[1],
    )


async def attempt_delivery(delivery: Delivery, deps: Deps) -> list[Event]:
    """Make one HTTP attempt and return the events that record it (and what it led to), or
    the DeliveryCanceled that gives the delivery up without one (:func:`why_canceled`).

    A retry goes to the subscription as it is now, not as it was at the first attempt.
    """
    sub = delivery.subscription = deps.current(delivery.subscription)
    attempt = delivery.attempts + 1
    base: dict[str, Any] = {
        "run_id": delivery.run_id,
        "message_id": delivery.message_id,
        "subscription_id": sub.id,
        "url": sub.url,
        "attempt": attempt,
    }
    if delivery.run is not None:
        base.update(tracing.fields(delivery.run.trace))
    if (why := why_canceled(delivery, deps)) is not None:
        return [_canceled(delivery, why)]
    run = delivery.run
    if run is None:
        run = await deps.load_run(delivery.partition, delivery.offset)
        if run is None or run.run_id != delivery.run_id:
            reason = f"the run's RunFinished (offset {delivery.offset}) is no longer on the topic"
            return _exhausted(
                delivery, DeliveryAttempted(**base, outcome="failed", error=reason), reason
            )
        delivery.run = run  # held until the delivery is done
        base.update(tracing.fields(run.trace))
        if (why := why_canceled(delivery, deps)) is not None:
            return [_canceled(delivery, why)]
    try:
        body = notification_body(run, deps.config)
    except (TypeError, ValueError) as exc:  # orjson: nested too deep, or not serialisable
        reason = f"the RunNotification cannot be built: {exc}"
        return _exhausted(
            delivery, DeliveryAttempted(**base, outcome="failed", error=reason), reason
        )
    headers = signed_headers(delivery.message_id, int(deps.now()), body, sub.keys, sub.headers)
    result = await _send(delivery, run.trace, attempt, body, headers, deps)
    fields = {
        **base,
        "status_code": result.status_code,
        "duration_ms": result.duration_ms,
        "response_excerpt": result.excerpt,
        "error": result.error,
    }
    code = result.status_code
    if code is not None and 200 <= code < 300:
        return [DeliveryAttempted(**fields, outcome="succeeded"), *_health(sub, deps, ok=True)]
    if result.refused:
        return [DeliveryAttempted(**fields, outcome="refused"), *_health(sub, deps)]
    if code == 410:
        return [
            DeliveryAttempted(**fields, outcome="gone"),
            SubscriptionDisabled(
                **tracing.fields(run.trace),
                subscription_id=sub.id,
                trigger_id=sub.trigger_id,
                url=sub.url,
                reason=f"410 Gone on attempt {attempt} of {delivery.message_id}",
                config_version=_version_of(sub, deps),
            ),
        ]
    delay = retry_delay(
        deps.schedule, attempt - delivery.round_start, deps.jitter, deps.rand, result.retry_after_s
    )
    if delay is None:
        last = DeliveryAttempted(**fields, outcome="failed")
        exhausted = _exhausted(delivery, last, result.error or f"HTTP {code}")
        return [*exhausted, *_health(sub, deps, exhausted=True)]
    next_at = datetime.fromtimestamp(deps.now() + delay, UTC)
    return [
        DeliveryAttempted(**fields, outcome="failed", next_attempt_at=next_at),
        *_health(sub, deps),
    ]


def _version_of(sub: Subscription, deps: Deps) -> str | None:
    """The config version a disabling holds for: a new config version enables a config-file
    subscription again; one made through the API stays disabled until the API enables it."""
    return deps.config.config_version if sub.source == "config" else None


def _health(
    sub: Subscription, deps: Deps, *, ok: bool = False, exhausted: bool = False
) -> list[Event]:
    """What an attempt's outcome changes in the subscription's health: a record when it starts
    failing, exhausts a delivery or recovers, and a SubscriptionDisabled once every attempt
    failed for ``disable_after_s`` or ``disable_after_exhausted`` deliveries in a row were
    exhausted. The records are on hookrun.subscriptions, so every instance (and a restart)
    counts from the same start."""
    current = deps.states.health.get(sub.id)
    if ok:
        if current is None:
            return []
        return [SubscriptionHealthChanged(subscription_id=sub.id, trigger_id=sub.trigger_id)]
    now = deps.now()
    since = current.failing_since if current is not None else None
    in_row = (current.exhausted_in_row if current is not None else 0) + exhausted
    events: list[Event] = []
    if since is None or exhausted:
        since = since or datetime.fromtimestamp(now, UTC)
        events.append(
            SubscriptionHealthChanged(
                subscription_id=sub.id,
                trigger_id=sub.trigger_id,
                failing_since=since,
                exhausted_in_row=in_row,
            )
        )
    policy = deps.config.notifier
    failing_for = now - since.timestamp()
    if failing_for >= policy.disable_after_s:
        why = f"every attempt failed for {failing_for:.0f} s (disable_after_s: {policy.disable_after_s:g})"
    elif policy.disable_after_exhausted is not None and in_row >= policy.disable_after_exhausted:
        why = f"{in_row} deliveries in a row exhausted (disable_after_exhausted: {policy.disable_after_exhausted})"
    else:
        return events
    disabled = SubscriptionDisabled(
        subscription_id=sub.id,
        trigger_id=sub.trigger_id,
        url=sub.url,
        reason=why,
        config_version=_version_of(sub, deps),
        cause="failing",
    )
    return [*events, disabled]


async def _send(
    delivery: Delivery,
    trace: TraceContext | None,
    attempt: int,
    body: bytes,
    headers: dict[str, str],
    deps: Deps,
) -> SendResult:
    """One HTTP attempt carrying the run's ``traceparent``; with spans on, in a client span of
    the run's trace (whose context the request carries)."""
    sub = delivery.subscription
    url = urlsplit(sub.url)
    attributes = {
        "http.request.method": "POST",
        "server.address": url.hostname or "",
        "url.scheme": url.scheme,
        "url.path": url.path or "/",
        "hookrun.run_id": delivery.run_id,
        "hookrun.subscription_id": sub.id,
        "hookrun.delivery.attempt": attempt,
    }
    with (
        tracing.span("POST", parent=trace, kind="client", attributes=attributes) as span,
        tracing.working_on(trace),
    ):
        context = tracing.current_context() or trace
        if context is not None:
            headers.update(context.http_headers())
        result = await deps.sender.send(sub.id, sub.url, body, headers)
        if span is not None:
            if result.status_code is not None:
                span.set_attribute("http.response.status_code", result.status_code)
            if result.status_code is None or not 200 <= result.status_code < 300:
                tracing.fail(span, result.error or f"HTTP {result.status_code}")
    return result


def _exhausted(delivery: Delivery, last: DeliveryAttempted, why: str) -> list[Event]:
    """The last attempt of a delivery, and the DeliveryExhausted that gives it up, saying why."""
    return [
        last,
        DeliveryExhausted(
            **tracing.fields(last.trace),
            run_id=last.run_id,
            message_id=delivery.message_id,
            subscription_id=last.subscription_id,
            attempts=last.attempt,
            last_error=why,
        ),
    ]


Handler = Callable[[Event, int, Book, Deps], Awaitable[list[Event]]]

HANDLERS: dict[type[Event], list[Handler]] = {
    RunFinished: [plan_deliveries],
    DeliveryAttempted: [record_attempt],
    DeliveryExhausted: [record_closed],
    DeliveryCanceled: [record_closed],
    RedeliveryRequested: [plan_redelivery],
}

#: The runs topic's other types are skipped undecoded (by their ce_type header); the
#: subscriptions topic's types are followed by the Notifier's table (SubscriptionStates).
EVENTS = EventMap(
    "notifier",
    frozenset({topics.RUNS, topics.SUBSCRIPTIONS}),
    {**HANDLERS, **dict.fromkeys(SUBSCRIPTION_TYPES, "Notifier.disabled")},
    frozenset(
        {
            TriggerLaunched,
            RunStarted,
            ExecutionCreated,
            ExecutionStarted,
            ExecutionHeartbeat,
            ExecutionFinished,
            PipelineCreated,
            PipelineNodeSkipped,
            PipelineFinished,
            RunCancelRequested,
            ActionCompleted,
        }
    ),
)
