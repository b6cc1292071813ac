"""Delivery rules with a FakeSender: retries, Retry-After, 410, exhaustion, replay, isolation."""

import asyncio
import time
from datetime import UTC, datetime

import pytest
from cryptography.fernet import Fernet
from prometheus_client import REGISTRY

from hookrun.config import parse_config
from hookrun.config.sealing import Sealer
from hookrun.events.memory import MemoryBroker
from hookrun.events.notifications import (
    DeliveryAttempted,
    DeliveryCanceled,
    DeliveryExhausted,
    RedeliveryRequested,
    SubscriptionDeleted,
    SubscriptionDisabled,
    SubscriptionEnabled,
    SubscriptionHealthChanged,
    SubscriptionSaved,
    SubscriptionSecret,
)
from hookrun.notifier.adapters import FakeSender, SendResult, parse_retry_after
from hookrun.notifier.app import Notifier
from hookrun.notifier.handlers import (
    HANDLERS,
    Book,
    Deps,
    attempt_delivery,
    retry_delay,
    subscriptions_of,
)
from tests.notifier.conftest import CONFIG as CONFIG_WITH_NOTIFIER
from tests.notifier.conftest import NAMESPACE, WHSEC_A, WHSEC_B, live_notifier, make_run_finished

SVIX = (0.0, 5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0)


def deps_for(config, respond=None, schedule=(0.0, 1.0, 2.0), **kw) -> Deps:
    return Deps(config=config, schedule=schedule, jitter=0.0, sender=FakeSender(respond), **kw)


async def apply(events, book, deps, offset=0):
    for event in events:
        for handler in HANDLERS.get(type(event), ()):
            await handler(event, offset, book, deps)


async def planned(config, deps):
    book = Book()
    await apply([make_run_finished()], book, deps, offset=7)
    return book


class TestRetrySchedule:
    @pytest.mark.parametrize("index", range(len(SVIX)))
    def test_jitter_stays_within_its_bounds(self, index):
        base = SVIX[index]
        low = retry_delay(SVIX, index, 0.2, lambda: 0.0)
        high = retry_delay(SVIX, index, 0.2, lambda: 0.999999)
        assert low == pytest.approx(base * 0.8)
        assert high == pytest.approx(base * 1.2, rel=1e-5)

    def test_the_schedule_runs_out_after_its_last_entry(self):
        assert retry_delay(SVIX, len(SVIX), 0.2, lambda: 0.5) is None

    def test_a_longer_retry_after_wins_over_the_schedule(self):
        assert retry_delay(SVIX, 1, 0.0, lambda: 0.5, retry_after_s=60) == 60
        assert retry_delay(SVIX, 2, 0.0, lambda: 0.5, retry_after_s=60) == 300

    def test_retry_after_is_parsed_as_seconds_or_an_http_date(self):
        assert parse_retry_after("120") == 120
        assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10
        assert parse_retry_after("soon") is None and parse_retry_after(None) is None


class TestAttemptDelivery:
    async def test_a_500_is_recorded_with_the_next_attempt_time(self, config):
        deps = deps_for(config, lambda u, b, h: SendResult(500, 12, "boom"))
        book = await planned(config, deps)
        delivery = next(iter(book.deliveries.values()))
        event, health = await attempt_delivery(delivery, deps)
        assert isinstance(event, DeliveryAttempted)
        assert isinstance(health, SubscriptionHealthChanged) and health.failing_since is not None
        assert (event.outcome, event.status_code, event.duration_ms) == ("failed", 500, 12)
        assert event.response_excerpt == "boom" and event.attempt == 1
        assert event.next_attempt_at.timestamp() == pytest.approx(time.time() + 1.0, abs=0.5)

    async def test_retry_after_moves_the_next_attempt(self, config):
        deps = deps_for(config, lambda u, b, h: SendResult(503, 1, retry_after_s=30))
        book = await planned(config, deps)
        event, _ = await attempt_delivery(next(iter(book.deliveries.values())), deps)
        assert event.next_attempt_at.timestamp() == pytest.approx(time.time() + 30, abs=0.5)

    async def test_the_last_failed_attempt_exhausts_the_delivery(self, config):
        deps = deps_for(config, lambda u, b, h: SendResult(None, 1, error="timed out"))
        book = await planned(config, deps)
        delivery = next(iter(book.deliveries.values()))
        for _ in range(3):
            events = await attempt_delivery(delivery, deps)
            await apply(events, book, deps)
        attempted, exhausted, _ = events
        assert attempted.attempt == 3 and attempted.next_attempt_at is None
        assert isinstance(exhausted, DeliveryExhausted) and exhausted.attempts == 3
        assert exhausted.last_error == "timed out"
        assert delivery.done

    async def test_a_410_disables_the_subscription(self, config):
        deps = deps_for(config, lambda u, b, h: SendResult(410, 1))
        book = await planned(config, deps)
        attempted, disabled = await attempt_delivery(next(iter(book.deliveries.values())), deps)
        assert attempted.outcome == "gone" and attempted.next_attempt_at is None
        assert isinstance(disabled, SubscriptionDisabled)
        assert disabled.config_version == config.config_version
        # later runs are not delivered to it under this config
        deps.states.apply(disabled)
        book2 = Book()
        await apply([make_run_finished(run_id="run-2")], book2, deps)
        assert disabled.subscription_id not in {k[1] for k in book2.deliveries}

    async def test_a_refused_target_is_final(self, config):
        deps = deps_for(config, lambda u, b, h: SendResult(None, 0, error="no", refused=True))
        book = await planned(config, deps)
        event, _ = await attempt_delivery(next(iter(book.deliveries.values())), deps)
        assert event.outcome == "refused" and event.next_attempt_at is None


class TestReplay:
    async def test_a_run_finished_plans_one_delivery_per_subscription(self, config):
        deps = deps_for(config)
        book = await planned(config, deps)
        subs = {s.id for s in subscriptions_of(config, "t1")}
        assert {k[1] for k in book.deliveries} == subs and len(subs) == 2
        assert book.low_watermark(100) == 7

    async def test_replaying_the_attempts_rebuilds_what_is_still_due(self, config):
        deps = deps_for(config)
        book = await planned(config, deps)
        (a, b) = book.deliveries.values()
        due = datetime.fromtimestamp(time.time() + 60, UTC)
        common = {"run_id": "run-1", "url": "u"}
        events = [
            DeliveryAttempted(
                **common,
                message_id=a.message_id,
                subscription_id=a.subscription.id,
                attempt=1,
                outcome="failed",
                status_code=500,
                next_attempt_at=due,
            ),
            DeliveryAttempted(
                **common,
                message_id=b.message_id,
                subscription_id=b.subscription.id,
                attempt=1,
                outcome="succeeded",
                status_code=200,
            ),
        ]
        fresh = Book()
        await apply([make_run_finished()], fresh, deps, offset=7)
        await apply(events, fresh, deps, offset=8)
        # a RunFinished seen again (at-least-once) changes nothing
        await apply([make_run_finished()], fresh, deps, offset=7)
        [pending] = fresh.pending()
        assert pending.subscription.id == a.subscription.id
        assert pending.attempts == 1 and pending.next_at == due.timestamp()
        assert fresh.low_watermark(100) == 7

    async def test_a_redelivery_restarts_the_schedule_with_the_same_webhook_id(self, config):
        deps = deps_for(config, lambda u, b, h: SendResult(200, 1))
        book = await planned(config, deps)
        delivery = next(iter(book.deliveries.values()))
        await apply(await attempt_delivery(delivery, deps), book, deps)
        assert delivery.done
        await apply(
            [RedeliveryRequested(run_id="run-1", subscription_id=delivery.subscription.id)],
            book,
            deps,
        )
        assert not delivery.done and delivery.round_start == 1
        [again] = await attempt_delivery(delivery, deps)
        assert again.attempt == 2 and again.message_id == delivery.message_id


class _Publisher:
    namespace = NAMESPACE

    def __init__(self):
        self.events = []

    async def publish(self, events):
        self.events.extend(events)


class TestIsolation:
    async def test_a_hanging_subscriber_does_not_delay_the_other(self, config):
        arrived: dict[str, float] = {}

        class Sender(FakeSender):
            async def send(self, subscription_id, url, body, headers):
                if url.endswith("/a"):
                    await asyncio.sleep(30)  # hangs far longer than the test
                arrived.setdefault(url, time.monotonic())
                return SendResult(200, 1)

        deps = Deps(config=config, schedule=(0.0,), jitter=0.0, sender=Sender())
        notifier, tp, _ = await live_notifier(deps, _Publisher())
        started = time.monotonic()
        # many runs: /a's lane fills with stuck attempts, /b's lane is untouched by them
        for n in range(20):
            await notifier.loop.dispatch(tp, make_run_finished(run_id=f"run-{n}"), n)
        while len([e for e in notifier.publisher.events if e.url.endswith("/b")]) < 20:
            await asyncio.sleep(0.01)
            assert time.monotonic() - started < 2
        assert "http://hooks.example.com/a" not in arrived
        for lane in notifier.lanes.values():
            for worker in lane.workers:
                worker.cancel()


async def test_a_notification_that_cannot_be_built_exhausts_its_delivery_with_the_reason(config):
    sent = []
    deps = deps_for(config, lambda u, b, h: sent.append(u) or SendResult(200, 1))
    payload: list[object] = []
    for _ in range(300):
        payload = [payload]
    run = make_run_finished()
    run = run.model_copy(
        update={"invocation": run.invocation.model_copy(update={"payload": payload})}
    )
    book = Book()
    await apply([run], book, deps)
    delivery = next(iter(book.deliveries.values()))
    attempted, exhausted = await attempt_delivery(delivery, deps)
    await apply([attempted, exhausted], book, deps)
    assert sent == []
    assert attempted.outcome == "failed" and "cannot be built" in (attempted.error or "")
    assert isinstance(exhausted, DeliveryExhausted)
    assert "cannot be built" in (exhausted.last_error or "")
    assert delivery.done


async def test_an_unexpected_error_retries_the_delivery_later_not_at_once(config, monkeypatch):
    calls = []

    async def broken(delivery, deps):
        calls.append(time.monotonic())
        raise RuntimeError("bug")

    monkeypatch.setattr("hookrun.notifier.handlers.attempt_delivery", broken)
    deps = deps_for(config)
    notifier = Notifier(
        deps,
        consumer=MemoryBroker().consumer("notifier"),
        publisher=_Publisher(),
        bootstrap="127.0.0.1:1",
        namespace=NAMESPACE,
        concurrency=1,
    )
    book = await planned(config, deps)
    delivery = next(iter(book.deliveries.values()))
    notifier.schedule(delivery)
    await asyncio.sleep(0.3)
    for lane in notifier.lanes.values():
        for worker in lane.workers:
            worker.cancel()
    assert len(calls) == 1
    assert delivery.next_at >= time.time() + 4


FILTERED = """
project: {id: p-1, slug: demo, name: Demo}
organization: {id: o-1, slug: acme, title: Acme}
environment: {id: e-1, slug: dev, type: DEVELOPMENT}
steps:
  - {name: extract, command: ["true"]}
triggers:
  - id: t1
    title: T1
    actions: [{action: run_execution, step: extract}]
    notifications:
      - {url: "http://hooks.example.com/all", secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}
      - url: "http://hooks.example.com/failures"
        secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
        statuses: [FAILURE, TIMED_OUT]
        headers: {X-Env: prod}
"""


class TestStatusesAndHeaders:
    async def test_only_runs_with_a_listed_status_are_delivered_to_a_filtered_subscription(self):
        config = parse_config(FILTERED, "filtered.yaml")
        deps = deps_for(config)
        book = Book()
        await apply(
            [
                make_run_finished(run_id="ok"),
                make_run_finished(ok=False, run_id="failed"),
                make_run_finished(ok=False, run_id="canceled", status="CANCELED"),
            ],
            book,
            deps,
        )
        urls = sorted((d.run_id, d.subscription.url.rsplit("/", 1)[1]) for d in book.pending())
        assert urls == [
            ("canceled", "all"),
            ("failed", "all"),
            ("failed", "failures"),
            ("ok", "all"),
        ]

    async def test_the_extra_headers_are_sent_beside_the_signature(self):
        sent = []

        def respond(url, body, headers):
            sent.append(headers)
            return SendResult(200, 3, "")

        deps = deps_for(parse_config(FILTERED, "filtered.yaml"), respond)
        book = Book()
        await apply([make_run_finished(ok=False, run_id="failed")], book, deps)
        for delivery in book.pending():
            await attempt_delivery(delivery, deps)
        extra = [h.get("X-Env") for h in sent]
        assert sorted(extra, key=str) == [None, "prod"]
        assert all(h["webhook-signature"].startswith("v1,") for h in sent)


class Clock:
    """An injectable clock: tests move time instead of waiting."""

    def __init__(self, at: float) -> None:
        self.at = at

    def __call__(self) -> float:
        return self.at


DAY = 86_400.0


class TestSubscriptionHealth:
    async def attempt(self, deps, run_id, book=None):
        """One attempt of a fresh delivery; its events are folded as the Notifier does."""
        book = book or Book()
        await apply([make_run_finished(run_id=run_id)], book, deps)
        delivery = next(d for d in book.pending() if d.subscription.url.endswith("/a"))
        events = await attempt_delivery(delivery, deps)
        for event in events:
            deps.states.apply(event)
        return events

    def failing(self, config, code=500, **kw):
        clock = Clock(1_800_000_000.0)
        deps = deps_for(config, lambda u, b, h: SendResult(code, 1), now=clock, **kw)
        return deps, clock

    async def test_a_subscription_failing_for_five_days_is_disabled(self, config):
        deps, clock = self.failing(config)
        [_, started] = await self.attempt(deps, "r-1")
        assert started.failing_since.timestamp() == clock.at
        clock.at += 5 * DAY - 1
        assert [type(e) for e in await self.attempt(deps, "r-2")] == [DeliveryAttempted]
        clock.at += 1
        *_, disabled = await self.attempt(deps, "r-3")
        assert isinstance(disabled, SubscriptionDisabled) and disabled.cause == "failing"
        assert "every attempt failed for 432000 s" in disabled.reason
        # the next run is not delivered to it
        book = Book()
        await apply([make_run_finished(run_id="r-4")], book, deps)
        assert disabled.subscription_id not in {d.subscription.id for d in book.pending()}

    async def test_one_success_starts_the_count_again(self, config):
        deps, clock = self.failing(config)
        await self.attempt(deps, "r-1")
        deps.sender = FakeSender(lambda u, b, h: SendResult(200, 1))
        clock.at += 4 * DAY
        [_, recovered] = await self.attempt(deps, "r-2")
        assert isinstance(recovered, SubscriptionHealthChanged)
        assert recovered.failing_since is None and not deps.states.health
        deps.sender = FakeSender(lambda u, b, h: SendResult(500, 1))
        clock.at += 4 * DAY
        events = await self.attempt(deps, "r-3")
        assert not any(isinstance(e, SubscriptionDisabled) for e in events)
        # a healthy subscription's success records nothing
        deps.sender = FakeSender(lambda u, b, h: SendResult(200, 1))
        await self.attempt(deps, "r-4")
        assert [type(e) for e in await self.attempt(deps, "r-5")] == [DeliveryAttempted]

    async def test_n_exhausted_deliveries_in_a_row_disable_it(self):
        config = parse_config(
            CONFIG_WITH_NOTIFIER + "notifier: {disable_after_exhausted: 2}\n", "n.yaml"
        )
        deps, _ = self.failing(config, schedule=(0.0,))
        first = await self.attempt(deps, "r-1")
        assert first[-1].exhausted_in_row == 1
        second = await self.attempt(deps, "r-2")
        assert isinstance(second[-1], SubscriptionDisabled)
        assert second[-1].reason == "2 deliveries in a row exhausted (disable_after_exhausted: 2)"

    async def test_enabling_it_again_forgets_its_failures(self, config):
        deps, clock = self.failing(config)
        await self.attempt(deps, "r-1")
        clock.at += 5 * DAY
        *_, disabled = await self.attempt(deps, "r-2")
        deps.states.apply(
            SubscriptionEnabled(subscription_id=disabled.subscription_id, trigger_id="t1")
        )
        assert not deps.states.disabled and not deps.states.health
        [_, started] = await self.attempt(deps, "r-3")
        assert started.failing_since.timestamp() == clock.at


class TestSubscriptionsMadeThroughTheApi:
    def saved(self, secrets, **kw):
        kw = {"url": "http://hooks.example.com/made", **kw}
        return SubscriptionSaved(subscription_id="t1:sub_1", trigger_id="t1", secrets=secrets, **kw)

    async def test_a_saved_subscription_gets_the_next_run_and_a_deleted_one_nothing(self, config):
        key = Fernet.generate_key().decode()
        deps = deps_for(config, sealer=Sealer(key))
        deps.states.apply(
            self.saved([SubscriptionSecret(secret=Sealer(key).seal(WHSEC_A))], statuses=["FAILURE"])
        )
        book = Book()
        await apply(
            [make_run_finished(run_id="ok"), make_run_finished(ok=False, run_id="bad")], book, deps
        )
        made = [d for d in book.pending() if d.subscription.id == "t1:sub_1"]
        assert [d.run_id for d in made] == ["bad"]
        assert made[0].subscription.keys.trigger_secret == WHSEC_A  # unsealed with the key
        deps.states.apply(SubscriptionDeleted(subscription_id="t1:sub_1", trigger_id="t1"))
        [closed] = await attempt_delivery(made[0], deps)
        assert isinstance(closed, DeliveryCanceled) and closed.cause == "deleted"
        assert closed.reason == "the subscription was deleted" and closed.attempts == 0
        assert deps.sender.sent == []

    async def test_a_retry_goes_to_the_subscription_as_changed_since(self, config):
        deps = deps_for(config, respond=lambda url, body, headers: SendResult(500, 1, "no"))
        deps.states.apply(self.saved([SubscriptionSecret(secret=WHSEC_A)]))
        book = await planned(config, deps)
        [delivery] = [d for d in book.pending() if d.subscription.id == "t1:sub_1"]
        await attempt_delivery(delivery, deps)
        deps.states.apply(
            self.saved(
                [SubscriptionSecret(secret=WHSEC_B)],
                url="http://hooks.example.com/moved",
                headers={"X-Env": "prod"},
            )
        )
        retried, *_ = await attempt_delivery(delivery, deps)
        assert retried.url == "http://hooks.example.com/moved"
        [first, second] = [s for s in deps.sender.sent if s[0] == "t1:sub_1"]
        assert first[1] == "http://hooks.example.com/made"
        assert second[1] == "http://hooks.example.com/moved"
        assert second[3]["X-Env"] == "prod" and "X-Env" not in first[3]
        assert second[3]["webhook-signature"] != first[3]["webhook-signature"]  # WHSEC_B signs

    async def test_a_retry_the_changed_statuses_leave_out_is_canceled_not_sent(self, config):
        deps = deps_for(config, respond=lambda url, body, headers: SendResult(500, 1, "no"))
        deps.states.apply(self.saved([SubscriptionSecret(secret=WHSEC_A)]))
        book = await planned(config, deps)  # a SUCCESS run
        [delivery] = [d for d in book.pending() if d.subscription.id == "t1:sub_1"]
        await apply(await attempt_delivery(delivery, deps), book, deps)
        assert not delivery.done and delivery.attempts == 1
        # PATCH statuses: only failures from now on
        deps.states.apply(
            self.saved([SubscriptionSecret(secret=WHSEC_A)], statuses=["FAILURE", "TIMED_OUT"])
        )
        [canceled] = await attempt_delivery(delivery, deps)
        assert isinstance(canceled, DeliveryCanceled)
        assert (canceled.cause, canceled.attempts, canceled.url) == (
            "filtered",
            1,
            "http://hooks.example.com/made",
        )
        assert canceled.reason == (
            "the subscription's statuses (FAILURE, TIMED_OUT) no longer include SUCCESS"
        )
        assert [s[0] for s in deps.sender.sent].count("t1:sub_1") == 1  # no second request
        await apply([canceled], book, deps)
        assert delivery.done and delivery not in book.pending()

    @pytest.mark.parametrize(
        ("change", "cause"),
        [
            (SubscriptionDeleted(subscription_id="t1:sub_1", trigger_id="t1"), "deleted"),
            ({"statuses": ["FAILURE"]}, "filtered"),
        ],
    )
    async def test_a_retry_replayed_after_its_subscription_changed_is_canceled(
        self, config, change, cause
    ):
        # the notifier was down (or the partition elsewhere) while the subscription changed
        deps = deps_for(config)
        deps.states.apply(
            change
            if isinstance(change, SubscriptionDeleted)
            else self.saved([SubscriptionSecret(secret=WHSEC_A)], **change)
        )
        due = datetime.fromtimestamp(time.time() + 3600, UTC)
        failed = DeliveryAttempted(
            run_id="run-1",
            message_id="msg_run-1_sub",
            subscription_id="t1:sub_1",
            url="http://hooks.example.com/made",
            attempt=1,
            outcome="failed",
            status_code=500,
            next_attempt_at=due,
        )
        book = Book()
        await apply([make_run_finished()], book, deps, offset=7)
        await apply([failed], book, deps, offset=8)
        [delivery] = [d for d in book.pending() if d.subscription.id == "t1:sub_1"]
        assert delivery.attempts == 1 and book.low_watermark(100) == 7
        [canceled] = await attempt_delivery(delivery, deps)
        assert isinstance(canceled, DeliveryCanceled) and canceled.cause == cause
        assert deps.sender.sent == []

    async def test_a_redelivery_asked_by_name_goes_despite_the_statuses(self, config):
        deps = deps_for(config, respond=lambda url, body, headers: SendResult(200, 1))
        deps.states.apply(self.saved([SubscriptionSecret(secret=WHSEC_A)], statuses=["FAILURE"]))
        book = await planned(config, deps)  # a SUCCESS run: not delivered to it
        assert all(d.subscription.id != "t1:sub_1" for d in book.deliveries.values())
        await apply([RedeliveryRequested(run_id="run-1", subscription_id="t1:sub_1")], book, deps)
        [delivery] = [d for d in book.pending() if d.subscription.id == "t1:sub_1"]
        [sent, *_] = await attempt_delivery(delivery, deps)
        assert isinstance(sent, DeliveryAttempted) and sent.outcome == "succeeded"

    async def test_waiting_retries_are_canceled_when_the_change_arrives(self, config):
        from hookrun.notifier import metrics

        # every attempt fails, and the retry waits an hour
        deps = deps_for(config, lambda u, b, h: SendResult(500, 1), schedule=(0.0, 3600.0))
        deps.states.apply(self.saved([SubscriptionSecret(secret=WHSEC_A)]))
        notifier, tp, _ = await live_notifier(deps, _Publisher())
        metrics.watch(lambda: [d for b in notifier.books.values() for d in b.deliveries.values()])
        retries = lambda: REGISTRY.get_sample_value("hookrun_delivery_retries_pending")  # noqa: E731
        await notifier.loop.dispatch(tp, make_run_finished(), 0)
        async with asyncio.timeout(2):
            while retries() < 3:  # the two config subscriptions and the one made through the API
                await asyncio.sleep(0.01)
        # PATCH statuses through the admin API; then a 410 disables /a
        notifier.disabled(self.saved([SubscriptionSecret(secret=WHSEC_A)], statuses=["FAILURE"]))
        [a] = [s for s in deps.subscriptions("t1") if s.url.endswith("/a")]
        gone = SubscriptionDisabled(subscription_id=a.id, trigger_id="t1", url=a.url, reason="410")
        notifier.disabled(gone)
        async with asyncio.timeout(2):
            while retries() > 1:  # canceled now, not in an hour
                await asyncio.sleep(0.01)
        canceled = {
            e.subscription_id: e.cause
            for e in notifier.publisher.events
            if isinstance(e, DeliveryCanceled)
        }
        assert canceled == {"t1:sub_1": "filtered", a.id: "disabled"}
        assert len(deps.sender.sent) == 3  # the first attempts only
        for lane in notifier.lanes.values():
            for worker in lane.workers:
                worker.cancel()

    def test_an_expired_secret_no_longer_signs(self, config):
        clock = Clock(1_800_000_000.0)
        deps = deps_for(config, now=clock)
        later = datetime.fromtimestamp(clock.at + 60, UTC)
        deps.states.apply(
            self.saved(
                [
                    SubscriptionSecret(secret=WHSEC_B),
                    SubscriptionSecret(secret=WHSEC_A, expires_at=later),
                ]
            )
        )
        [sub] = [s for s in deps.subscriptions("t1") if s.source == "api"]
        assert len(sub.keys.hmac) == 2
        clock.at += 61
        [sub] = [s for s in deps.subscriptions("t1") if s.source == "api"]
        assert len(sub.keys.hmac) == 1 and sub.keys.trigger_secret == WHSEC_B

    def test_a_secret_it_cannot_unseal_leaves_it_out(self, config, caplog):
        sealed = Sealer(Fernet.generate_key().decode()).seal(WHSEC_A)
        deps = deps_for(config)  # no key here
        deps.states.apply(self.saved([SubscriptionSecret(secret=sealed)]))
        assert all(s.source == "config" for s in deps.subscriptions("t1"))
        assert "HOOKRUN_SECRETS_KEY" in caplog.text and "MfKQ9r8G" not in caplog.text
