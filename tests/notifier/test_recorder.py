"""Recording attempts: batched acks=all appends, nothing applied before it is durable, echoes."""

import asyncio

from hookrun.events.codec import encode
from hookrun.notifier.adapters import FakeSender
from hookrun.notifier.handlers import Deps
from tests.notifier.conftest import NAMESPACE, live_notifier, make_run_finished


class GatedPublisher:
    """Records each publish call; acknowledges only when the test opens the gate."""

    namespace = NAMESPACE

    def __init__(self) -> None:
        self.calls: list[list] = []
        self.gate = asyncio.Event()

    async def publish(self, events):
        self.calls.append(list(events))
        await self.gate.wait()


async def notifier_for(config, publisher):
    """A notifier whose partition 0 is assigned and live, its partition and its broker; its
    publishes go to ``publisher``."""
    deps = Deps(config=config, schedule=(0.0, 60.0), jitter=0.0, sender=FakeSender())
    return await live_notifier(deps, publisher)


def stop(notifier) -> None:
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
        notifier, tp, _ = await notifier_for(config, publisher)
        try:
            await notifier.loop.dispatch(tp, make_run_finished(), 5)
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
        notifier, tp, _ = await notifier_for(config, publisher)
        try:
            await notifier.loop.dispatch(tp, make_run_finished(run_id="run-0"), 0)
            await wait_until(lambda: publisher.calls)
            for n in range(1, 6):
                await notifier.loop.dispatch(tp, make_run_finished(run_id=f"run-{n}"), n)
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
        # 4 workers per lane, 8 may wait
        notifier, tp, _ = await notifier_for(config, publisher)
        try:
            for n in range(20):
                await notifier.loop.dispatch(tp, make_run_finished(run_id=f"run-{n}"), n)
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
        notifier, tp, broker = await notifier_for(config, publisher)
        try:
            await notifier.loop.dispatch(tp, make_run_finished(), 0)
            await wait_until(lambda: len(publisher.calls) and not notifier.recorder._pending)
            await notifier.recorder.drain()
            first, second = (e for call in publisher.calls for e in call)
            assert notifier.loop.echoes.seen(tp, ce_id(first))
            assert not notifier.loop.echoes.seen(tp, ce_id(first))  # once only
            # after a rebalance the partition has a new Book: the echo must be replayed
            await broker.rebalance("notifier")
            assert not notifier.loop.echoes.seen(tp, ce_id(second))
        finally:
            stop(notifier)


def ce_id(event) -> bytes:
    return dict(encode(event).headers)["ce_id"]


async def test_only_the_types_it_acts_on_are_decoded(config) -> None:
    from hookrun.events import RedeliveryRequested, TriggerLaunched, topics
    from hookrun.events.memory import MemoryBroker
    from hookrun.events.runs import LaunchRequest

    broker = MemoryBroker()
    broker.create_topics(NAMESPACE, partitions=1)
    publisher = broker.publisher(NAMESPACE)
    deps = Deps(config=config, schedule=(0.0,), jitter=0.0, sender=FakeSender())
    # a redelivery of a delivered run reads its RunFinished again
    notifier, tp, _ = await live_notifier(deps, publisher, broker=broker, reader=broker.consumer)
    finished = make_run_finished()
    launched = TriggerLaunched(
        run_id=finished.run_id,
        trigger_id="t",
        config_version="v",
        request=LaunchRequest(method="POST", path="/", body_b64=""),
    )
    key = finished.run_id.encode()

    async def steps_until(predicate) -> None:
        async with asyncio.timeout(5):
            while not predicate():
                await notifier.loop.step()

    try:
        # a malformed launch is not decoded here: the runner and the status service act on
        # launches, and dead-letter a malformed one
        broker.append(notifier.topic, b"not json", key=key, headers=encode(launched).headers)
        # a record without a CloudEvent type is decoded, so that it is dead-lettered
        broker.append(
            notifier.topic, b"{}", key=key, headers=[("content-type", b"application/json")]
        )
        await publisher.publish([finished])
        book = notifier.books[tp]
        await steps_until(lambda: finished.run_id in book.delivered)
        assert len(deps.sender.sent) == 2  # the RunFinished was decoded
        await publisher.publish([RedeliveryRequested(run_id=finished.run_id, requested_by="admin")])
        await steps_until(lambda: len(deps.sender.sent) == 4)  # and so was the redelivery
        letters = broker.records(topics.named(topics.dlq(topics.RUNS), NAMESPACE))
        assert [dict(r.headers)["dlq_offset"] for r in letters] == [b"1"]
    finally:
        stop(notifier)
