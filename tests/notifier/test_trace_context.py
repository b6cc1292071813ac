"""A delivery carries its run's trace: the webhook's traceparent, and the events recording it."""

from hookrun.events.notifications import (
    DeliveryAttempted,
    DeliveryExhausted,
    SubscriptionHealthChanged,
)
from hookrun.notifier.adapters import FakeSender, SendResult
from hookrun.notifier.handlers import Book, Deps, attempt_delivery
from tests.notifier.conftest import make_run_finished
from tests.notifier.test_handlers import apply

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


async def _attempts(config, run, respond=None):
    sender = FakeSender(respond)
    deps = Deps(config=config, schedule=(0.0,), jitter=0.0, sender=sender)
    book = Book()
    await apply([run], book, deps)
    delivery = sorted(book.deliveries.values(), key=lambda d: d.subscription.url)[0]
    return sender, await attempt_delivery(delivery, deps)


async def test_the_webhook_and_the_attempt_carry_the_runs_trace_context(config) -> None:
    run = make_run_finished(traceparent=TRACEPARENT, tracestate="vendor=1")
    sender, [attempted] = await _attempts(config, run)
    [(_, _, _, headers)] = sender.sent
    assert headers["traceparent"] == TRACEPARENT
    assert headers["tracestate"] == "vendor=1"
    assert isinstance(attempted, DeliveryAttempted)
    assert (attempted.traceparent, attempted.tracestate) == (TRACEPARENT, "vendor=1")


async def test_an_exhausted_delivery_records_the_trace_on_both_events(config) -> None:
    run = make_run_finished(traceparent=TRACEPARENT)
    _, events = await _attempts(config, run, lambda u, b, h: SendResult(500, 1))
    # the subscription's health record is about the subscription, not the run: no trace
    assert [type(e) for e in events] == [
        DeliveryAttempted,
        DeliveryExhausted,
        SubscriptionHealthChanged,
    ]
    assert {e.traceparent for e in events[:2]} == {TRACEPARENT}


async def test_a_run_without_a_trace_sends_no_traceparent(config) -> None:
    sender, [attempted] = await _attempts(config, make_run_finished())
    assert "traceparent" not in sender.sent[0][3] and attempted.trace is None
