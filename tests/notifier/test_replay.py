"""The notifier on the shared consume loop (in-memory broker): replay, then what is pending."""

import asyncio
import time
from datetime import UTC, datetime

from hookrun.events.clients import Commit
from hookrun.events.memory import MemoryBroker
from hookrun.events.notifications import DeliveryAttempted, RedeliveryRequested
from hookrun.notifier import handlers
from hookrun.notifier.adapters import FakeSender
from hookrun.notifier.handlers import Deps, subscriptions_of
from hookrun.notifier.signing import message_id
from tests.notifier.conftest import NAMESPACE, live_notifier, make_run_finished


def attempted(run_id: str, sub, outcome: str, next_at: float | None = None) -> DeliveryAttempted:
    return DeliveryAttempted(
        run_id=run_id,
        message_id=message_id(run_id, sub.id),
        subscription_id=sub.id,
        url=sub.url,
        attempt=1,
        outcome=outcome,
        next_attempt_at=None if next_at is None else datetime.fromtimestamp(next_at, UTC),
    )


async def replayed(config, log: list, schedule: tuple[float, ...]):
    """A notifier that took over a partition holding ``log``: replayed and live.

    Returns the notifier, the partition, the broker and the deps (with a FakeSender).
    """
    broker = MemoryBroker()
    broker.create_topics(NAMESPACE, partitions=1)
    publisher = broker.publisher(NAMESPACE)
    await publisher.publish(log)
    deps = Deps(config=config, schedule=schedule, jitter=0.0, sender=FakeSender())
    notifier, tp, _ = await live_notifier(deps, publisher, broker=broker, reader=broker.consumer)
    return notifier, tp, broker, deps


async def steps_until(notifier, predicate) -> None:
    async with asyncio.timeout(5):
        while not predicate():
            await notifier.loop.step()


async def test_a_new_owner_replays_without_sending_then_sends_what_is_pending_when_due(config):
    a, b = subscriptions_of(config, "t1")
    due = time.time() + 0.3
    # a previous owner delivered to a, and b's first attempt failed with a retry due soon
    run = make_run_finished()
    log = [run, attempted(run.run_id, a, "succeeded"), attempted(run.run_id, b, "failed", due)]
    notifier, tp, broker, deps = await replayed(config, log, (0.0, 0.3))
    assert notifier.books[tp].pending() and notifier.loop.parts[tp].live
    try:
        assert deps.sender.sent == []  # the replay sent nothing
        await steps_until(notifier, lambda: deps.sender.sent)
        assert time.time() >= due - 0.05
        assert [url for _, url, _, _ in deps.sender.sent] == [b.url]
        # once b's attempt is recorded, nothing is pending: the watermark passes the run
        await steps_until(notifier, lambda: broker.committed("notifier", tp) == Commit(4))
        assert [url for _, url, _, _ in deps.sender.sent] == [b.url]
    finally:
        await notifier.drain()


async def test_the_committed_watermark_holds_at_the_oldest_run_with_a_pending_delivery(config):
    a, b = subscriptions_of(config, "t1")
    done, waiting = make_run_finished(run_id="run-done"), make_run_finished(run_id="run-wait")
    log = [
        done,
        attempted(done.run_id, a, "succeeded"),
        attempted(done.run_id, b, "succeeded"),
        waiting,  # offset 3: b's retry waits an hour
        attempted(waiting.run_id, a, "succeeded"),
        attempted(waiting.run_id, b, "failed", time.time() + 3600),
    ]
    notifier, tp, broker, deps = await replayed(config, log, (0.0, 3600.0))
    try:
        await notifier.loop.commit()
        assert broker.committed("notifier", tp) == Commit(3)
        assert deps.sender.sent == []
    finally:
        await notifier.drain()


async def test_a_redelivery_of_a_run_the_book_forgot_finds_the_run_in_its_partition(
    config, monkeypatch
):
    monkeypatch.setattr(handlers, "REMEMBERED_RUNS", 1)
    a, b = subscriptions_of(config, "t1")
    old, new = make_run_finished(run_id="run-old"), make_run_finished(run_id="run-new")
    log = [old, *(attempted(old.run_id, s, "succeeded") for s in (a, b))]
    # the Book remembers one run: the newer one
    log += [new, *(attempted(new.run_id, s, "succeeded") for s in (a, b))]
    notifier, tp, broker, deps = await replayed(config, log, (0.0,))
    try:
        assert list(notifier.books[tp].delivered) == [new.run_id]
        await broker.publisher(NAMESPACE).publish(
            [RedeliveryRequested(run_id=old.run_id, subscription_id=a.id)]
        )
        await steps_until(notifier, lambda: deps.sender.sent)
        [(sub_id, url, _, headers)] = deps.sender.sent
        assert (sub_id, url) == (a.id, a.url)
        assert headers["webhook-id"] == message_id(old.run_id, a.id)
    finally:
        await notifier.drain()
