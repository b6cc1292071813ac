"""Recording attempts: batched acks=all appends, nothing applied before it is durable, echoes."""

import asyncio

from aiokafka import TopicPartition

from hookrun.events.codec import encode
from hookrun.notifier.adapters import FakeSender
from hookrun.notifier.app import Notifier
from hookrun.notifier.handlers import Deps
from tests.notifier.conftest import make_run_finished


class GatedPublisher:
    """Records each publish call; acknowledges only when the test opens the gate."""

    def __init__(self) -> None:
        self.calls: list[list] = []
        self.gate = asyncio.Event()

    async def publish(self, events):
        self.calls.append(list(events))
        await self.gate.wait()


def notifier_for(config, publisher) -> tuple[Notifier, TopicPartition]:
    deps = Deps(config=config, schedule=(0.0, 60.0), jitter=0.0, sender=FakeSender())
    notifier = Notifier(
        deps, bootstrap="127.0.0.1:1", namespace="t-unit", publisher=publisher, concurrency=4
    )
    tp = TopicPartition(notifier.topic, 0)
    notifier.assign([tp])
    notifier.live.add(tp)
    return notifier, tp


def stop(notifier: Notifier) -> None:
    for lane in notifier.lanes.values():
        for worker in lane.workers:
            worker.cancel()
    notifier.recorder.stop()


async def wait_until(predicate, timeout_s=2.0):
    async with asyncio.timeout(timeout_s):
        while not predicate():
            await asyncio.sleep(0.005)


class TestRecorder:
    async def test_a_delivery_stays_in_flight_and_unapplied_until_its_event_is_acknowledged(
        self, config
    ):
        publisher = GatedPublisher()
        notifier, tp = notifier_for(config, publisher)
        try:
            await notifier._handle(tp, make_run_finished(), 5)
            book = notifier.books[tp]
            await wait_until(lambda: sum(len(c) for c in publisher.calls) == 2)
            # both attempts were made, but not yet durable: nothing moved, nothing re-sent
            assert all(d.in_flight and not d.done for d in book.deliveries.values())
            assert book.low_watermark(100) == 5
            assert len(notifier.deps.sender.sent) == 2
            publisher.gate.set()
            await notifier.recorder.drain()
            assert all(d.done and not d.in_flight for d in book.deliveries.values())
            assert book.low_watermark(100) == 100
            assert len(notifier.deps.sender.sent) == 2
        finally:
            stop(notifier)

    async def test_attempts_finished_while_a_batch_is_acknowledged_share_the_next_append(
        self, config
    ):
        publisher = GatedPublisher()
        notifier, tp = notifier_for(config, publisher)
        try:
            await notifier._handle(tp, make_run_finished(run_id="run-0"), 0)
            await wait_until(lambda: publisher.calls)
            for n in range(1, 6):
                await notifier._handle(tp, make_run_finished(run_id=f"run-{n}"), n)
            await wait_until(lambda: len(notifier.deps.sender.sent) == 12)
            publisher.gate.set()
            await notifier.recorder.drain()
            # 12 attempts (6 runs x 2 subscriptions) in a few appends, not one each
            sizes = [len(c) for c in publisher.calls]
            assert sum(sizes) == 12 and len(publisher.calls) < 6
            assert all(d.done for d in notifier.books[tp].deliveries.values())
        finally:
            stop(notifier)

    async def test_while_kafka_does_not_acknowledge_sending_stops_after_a_bounded_number(
        self, config
    ):
        publisher = GatedPublisher()
        notifier, tp = notifier_for(config, publisher)  # 4 workers per lane, 8 may wait
        try:
            for n in range(20):
                await notifier._handle(tp, make_run_finished(run_id=f"run-{n}"), n)
            await asyncio.sleep(0.2)
            # 8 waiting to be recorded + at most the 8 workers blocked handing theirs over
            assert len(notifier.deps.sender.sent) <= 16
            publisher.gate.set()
            await wait_until(lambda: len(notifier.deps.sender.sent) == 40)
            await notifier.recorder.drain()
            assert all(d.done for d in notifier.books[tp].deliveries.values())
        finally:
            stop(notifier)

    async def test_the_echo_of_a_recorded_event_is_skipped_only_by_the_book_it_was_applied_to(
        self, config
    ):
        publisher = GatedPublisher()
        publisher.gate.set()
        notifier, tp = notifier_for(config, publisher)
        try:
            await notifier._handle(tp, make_run_finished(), 0)
            await wait_until(lambda: len(publisher.calls) and not notifier.recorder._pending)
            await notifier.recorder.drain()
            first, second = (e for call in publisher.calls for e in call)
            assert notifier._is_own_echo(tp, encode(first).headers)
            assert not notifier._is_own_echo(tp, encode(first).headers)  # once only
            # after a rebalance the partition has a new Book: the echo must be replayed
            await notifier.revoke([tp])
            notifier.assign([tp])
            assert not notifier._is_own_echo(tp, encode(second).headers)
        finally:
            stop(notifier)


def test_only_the_types_it_acts_on_are_decoded() -> None:
    from hookrun.events import RedeliveryRequested, TriggerLaunched
    from hookrun.events.runs import LaunchRequest
    from hookrun.notifier.app import _acts_on

    finished = make_run_finished()
    launched = TriggerLaunched(
        run_id=finished.run_id,
        trigger_id="t",
        config_version="v",
        request=LaunchRequest(method="POST", path="/", body_b64=""),
    )
    redeliver = RedeliveryRequested(run_id=finished.run_id, requested_by="admin")
    assert _acts_on(encode(finished).headers) and _acts_on(encode(redeliver).headers)
    assert not _acts_on(encode(launched).headers)
    # a record without a CloudEvent type is decoded, so that it is dead-lettered
    assert _acts_on([("content-type", b"application/json")])
