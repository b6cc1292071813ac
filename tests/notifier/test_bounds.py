"""What the notifier keeps per run once its deliveries are done: a small record, boundedly many."""

import gc
import sys
import types
from datetime import UTC, datetime

import orjson

from hookrun.events.notifications import DeliveryAttempted, RedeliveryRequested
from hookrun.notifier import handlers
from hookrun.notifier.adapters import FakeSender
from hookrun.notifier.handlers import HANDLERS, Book, Deps, subscriptions_of
from hookrun.notifier.signing import message_id
from tests.notifier.conftest import NAMESPACE, live_notifier, make_run_finished
from tests.notifier.test_replay import attempted, replayed, steps_until


def held_bytes(root: object) -> int:
    """Bytes of the objects ``root`` holds (classes, modules and code left out)."""
    skip = (type, types.ModuleType, types.FunctionType, types.BuiltinFunctionType)
    seen: set[int] = set()
    stack, total = [root], 0
    while stack:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, skip):
            continue
        seen.add(id(obj))
        total += sys.getsizeof(obj)
        stack.extend(gc.get_referents(obj))
    return total


class _Publisher:
    namespace = NAMESPACE

    async def publish(self, events):
        return None


def big_run(n: int):
    run = make_run_finished(run_id=f"run-{n}")
    payload = {"blob": "p" * 20_000}
    return run.model_copy(
        update={"invocation": run.invocation.model_copy(update={"payload": payload})}
    )


async def test_after_n_delivered_runs_the_book_holds_no_run_only_boundedly_many_records(
    config, monkeypatch
):
    monkeypatch.setattr(handlers, "REMEMBERED_RUNS", 10)
    deps = Deps(config=config, schedule=(0.0,), jitter=0.0, sender=FakeSender())
    notifier, tp, _ = await live_notifier(deps, _Publisher())
    try:
        book = notifier.books[tp]
        held = {}
        for total in (30, 60):
            for n in range(total - 30, total):
                await notifier.loop.dispatch(tp, big_run(n), n)
            sent = 2 * total
            await steps_until(notifier, lambda: len(deps.sender.sent) == sent)  # noqa: B023
            await notifier.recorder.drain()
            # nothing of a delivered run but its record: no RunFinished, no delivery
            assert book.deliveries == {} and book.runs == {} and book.keys_of_run == {}
            assert list(book.delivered) == [f"run-{n}" for n in range(total - 10, total)]
            held[total] = held_bytes(book)
        # 10 RunFinished of 20 kB each would be 200 kB
        assert held[60] < 20_000, held
        assert abs(held[60] - held[30]) < 1_000, held
        assert len(notifier.lanes) == 2 and len(deps._subscriptions) == 1
    finally:
        await notifier.drain()


async def apply(events, book, deps, offset=0):
    for event in events:
        for handler in HANDLERS.get(type(event), ()):
            await handler(event, offset, book, deps)


def again(event: DeliveryAttempted, attempt: int) -> DeliveryAttempted:
    return event.model_copy(update={"attempt": attempt})


async def test_a_delivery_that_ends_after_many_other_runs_leaves_nothing_behind(
    config, monkeypatch
):
    monkeypatch.setattr(handlers, "REMEMBERED_RUNS", 2)
    deps = Deps(config=config, schedule=(0.0, 60.0), jitter=0.0, sender=FakeSender())
    a, b = subscriptions_of(config, "t1")
    book = Book()
    slow = make_run_finished(run_id="run-slow")
    retry = datetime.now(UTC).timestamp() + 60
    await apply([slow], book, deps)
    await apply(
        [attempted(slow.run_id, a, "succeeded"), attempted(slow.run_id, b, "failed", retry)],
        book,
        deps,
    )
    # b's retry of the slow run waits while more runs than the Book remembers are delivered
    for n in range(5):
        run = make_run_finished(run_id=f"run-{n}")
        await apply([run, *(attempted(run.run_id, s, "succeeded") for s in (a, b))], book, deps)
    assert list(book.runs) == [slow.run_id] and len(book.deliveries) == 2
    await apply([again(attempted(slow.run_id, b, "succeeded"), 2)], book, deps)
    assert book.deliveries == {} and book.runs == {} and book.keys_of_run == {}
    assert list(book.delivered) == ["run-4", slow.run_id]
    assert book.delivered[slow.run_id].attempts == {a.id: 1, b.id: 2}


async def test_a_redelivery_of_a_delivered_run_reads_it_again_and_numbers_attempts_on(config):
    a, b = subscriptions_of(config, "t1")
    run = make_run_finished()
    log = [run, attempted(run.run_id, a, "succeeded"), attempted(run.run_id, b, "succeeded")]
    notifier, tp, broker, deps = await replayed(config, log, (0.0,))
    try:
        book = notifier.books[tp]
        assert not book.runs and not book.deliveries
        assert book.delivered[run.run_id].attempts == {a.id: 1, b.id: 1}
        await broker.publisher(NAMESPACE).publish(
            [RedeliveryRequested(run_id=run.run_id, subscription_id=a.id)]
        )
        await steps_until(notifier, lambda: deps.sender.sent)
        [(sub_id, _, body, headers)] = deps.sender.sent
        assert sub_id == a.id and headers["webhook-id"] == message_id(run.run_id, a.id)
        assert orjson.loads(body)["id"] == run.run_id
        await steps_until(notifier, lambda: not book.deliveries)
        await notifier.recorder.drain()
        assert book.delivered[run.run_id].attempts == {a.id: 2, b.id: 1}
        assert not book.runs
    finally:
        await notifier.drain()


async def test_a_replayed_redelivery_of_a_delivered_run_sends_nothing_again(config):
    a, b = subscriptions_of(config, "t1")
    run = make_run_finished()
    first = [attempted(run.run_id, s, "succeeded") for s in (a, b)]
    redelivered = again(attempted(run.run_id, a, "succeeded"), 2)
    log = [run, *first, RedeliveryRequested(run_id=run.run_id, subscription_id=a.id), redelivered]
    notifier, tp, _, deps = await replayed(config, log, (0.0,))
    try:
        book = notifier.books[tp]
        await notifier.loop.step()
        assert deps.sender.sent == [] and book.deliveries == {}
        assert book.delivered[run.run_id].attempts == {a.id: 2, b.id: 1}
    finally:
        await notifier.drain()
