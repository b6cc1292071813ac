"""The consume loop on the in-memory broker: replay, live, echoes, dead letters, commits, rebalances."""

import asyncio

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import KafkaConnectionError

from hookrun.events import topics
from hookrun.events.clients import Commit
from hookrun.events.codec import encode
from hookrun.events.consumer import ConsumeLoop
from hookrun.events.memory import MemoryBroker
from hookrun.events.notifications import RedeliveryRequested, SubscriptionDisabled
from hookrun.events.runs import RunCancelRequested
from tests.events.tally import EVENTS, Tally, request, steps_until, tally_loop

NS = "t-mem"
RUNS = topics.named(topics.RUNS, NS)
DLQ = topics.named(topics.dlq(topics.RUNS), NS)
TP0 = TopicPartition(RUNS, 0)
GROUP = "tally"


def broker_with(partitions: int = 1) -> MemoryBroker:
    broker = MemoryBroker()
    broker.create_topics(NS, partitions=partitions)
    return broker


async def started(broker: MemoryBroker, **options):
    """A started loop of a new Tally (``loop.service``) in the group."""
    loop = tally_loop(Tally(), broker.consumer(GROUP), broker.publisher(NS), **options)
    await loop.start()
    return loop


def append_raw(broker: MemoryBroker, value: bytes, headers: list[tuple[str, bytes]]) -> int:
    return broker.append(RUNS, value, key=b"run-x", headers=headers)[1]


class TestReplayThenLive:
    async def test_a_partition_is_replayed_to_its_end_at_assignment_then_goes_live(self):
        broker = broker_with()
        publisher = broker.publisher(NS)
        await publisher.publish([request(f"r{n}") for n in range(3)])
        loop = await started(broker)
        tally = loop.service
        await steps_until(loop, lambda: loop.ready)
        sheet = loop.parts[TP0].state
        # replayed before going live, in order, and then live exactly once
        assert sheet.seen == [(0, "r0", False), (1, "r1", False), (2, "r2", False)]
        assert tally.live == [TP0]
        await publisher.publish([request("r3")])
        await steps_until(loop, lambda: len(sheet.seen) == 4)
        assert sheet.seen[-1] == (3, "r3", True)
        assert tally.live == [TP0]

    async def test_an_empty_partition_goes_live_at_once(self):
        loop = await started(broker_with())
        tally = loop.service
        await steps_until(loop, lambda: loop.ready)
        assert tally.live == [TP0] and loop.parts[TP0].state.seen == []

    async def test_a_gap_at_the_replay_start_is_read_again_then_taken_as_real(self):
        broker = broker_with()
        await broker.publisher(NS).publish([request(f"r{n}") for n in range(4)])
        broker._group(GROUP).committed[TP0] = Commit(1)  # the replay starts at 1 ...
        broker.remove(TP0, [1])  # ... which a fetch racing the seek would answer past
        loop = await started(broker, max_rereads=2)
        await steps_until(loop, lambda: loop.ready)
        part = loop.parts[TP0]
        assert part.rereads == 2
        assert [offset for offset, _, _ in part.state.seen] == [2, 3]

    async def test_gaps_past_the_first_record_are_the_logs_own_and_read_on(self):
        # Control records of transactions leave gaps in a replay; only the first record after
        # the seek can come from a fetch that raced it.
        broker = broker_with()
        await broker.publisher(NS).publish([request(f"r{n}") for n in range(6)])
        broker.remove(TP0, [2, 4])
        loop = await started(broker)
        await steps_until(loop, lambda: loop.ready)
        part = loop.parts[TP0]
        assert part.rereads == 0
        assert [offset for offset, _, _ in part.state.seen] == [0, 1, 3, 5]

    async def test_a_partition_whose_start_cannot_be_read_waits_paused_and_loses_nothing(self):
        broker = broker_with()
        await broker.publisher(NS).publish([request(f"r{n}") for n in range(3)])
        loop = tally_loop(Tally(), broker.consumer(GROUP), broker.publisher(NS))
        consumer, real = loop._consumer, loop._consumer.end_offsets
        outage = [KafkaConnectionError()]

        async def end_offsets(partitions):
            if outage:
                raise outage.pop()
            return await real(partitions)

        consumer.end_offsets = end_offsets
        await loop.start()
        await loop.step()  # assigned, but the broker did not answer
        assert not loop.ready and loop.parts == {} and consumer.paused() == {TP0}
        await steps_until(loop, lambda: loop.ready)
        assert [o for o, _, _ in loop.parts[TP0].state.seen] == [0, 1, 2]
        assert consumer.paused() == set()


class TestWhatIsDecoded:
    async def test_types_the_service_does_not_handle_are_skipped_undecoded(self):
        broker = broker_with()
        # a malformed record of an ignored type and one of a type no one registered
        for type_ in (RunCancelRequested.type, "hookrun.future.thing"):
            append_raw(
                broker,
                b"not json",
                [("ce_specversion", b"1.0"), ("ce_id", b"x"), ("ce_type", type_.encode())],
            )
        await broker.publisher(NS).publish([request("r1")])
        loop = await started(broker)
        await steps_until(loop, lambda: loop.ready)
        assert loop.parts[TP0].state.seen == [(2, "r1", False)]
        assert broker.records(DLQ) == []  # neither decoded nor dead-lettered

    async def test_an_undecodable_record_of_a_handled_type_is_dead_lettered_and_the_loop_goes_on(
        self,
    ):
        broker = broker_with()
        bad = [
            ("ce_specversion", b"1.0"),
            ("ce_id", b"bad-1"),
            ("ce_type", RedeliveryRequested.type.encode()),
        ]
        append_raw(broker, b"not json", bad)
        append_raw(broker, b"{}", [("content-type", b"application/json")])  # no ce_type at all
        await broker.publisher(NS).publish([request("r1")])
        loop = await started(broker)
        await steps_until(loop, lambda: loop.ready)
        assert loop.parts[TP0].state.seen == [(2, "r1", False)]
        letters = broker.records(DLQ)
        assert [dict(r.headers)["dlq_offset"] for r in letters] == [b"0", b"1"]
        assert dict(letters[0].headers)["dlq_topic"] == RUNS.encode()
        assert letters[0].value == b"not json"


class TestEchoes:
    async def test_the_echo_of_an_event_applied_before_publishing_is_skipped_once(self):
        broker = broker_with()
        loop = await started(broker)
        await steps_until(loop, lambda: loop.ready)
        sheet = loop.parts[TP0].state
        own, other = request("r-own"), request("r-other")
        loop.expect_echo(TP0, own)
        await loop.publish([own])
        await broker.publisher(NS).publish([other])
        await steps_until(loop, lambda: sheet.seen)
        assert sheet.seen == [(1, "r-other", True)]
        assert len(loop.echoes) == 0
        assert not loop.echoes.seen(TP0, own.event_id.encode())  # once only

    async def test_an_echo_is_replayed_once_its_partition_changed_hands(self):
        broker = broker_with()
        loop = await started(broker)
        await steps_until(loop, lambda: loop.ready)
        own = request("r-own")
        loop.expect_echo(TP0, own)
        await loop.publish([own])
        await broker.rebalance(GROUP)  # revoked and assigned again: the state is rebuilt
        await steps_until(loop, lambda: loop.ready and loop.parts[TP0].state.seen)
        assert loop.parts[TP0].state.seen == [(0, "r-own", False)]

    async def test_only_events_of_an_owned_partition_on_its_topic_are_expected(self):
        loop = await started(broker_with())
        await steps_until(loop, lambda: loop.ready)
        loop.expect_echo(TopicPartition(RUNS, 5), request("r-1"))  # not assigned here
        disabled = SubscriptionDisabled(subscription_id="s", trigger_id="t", url="u", reason="r")
        loop.expect_echo(TP0, disabled)  # goes to another topic
        assert len(loop.echoes) == 0


class TestPublishing:
    async def test_events_a_handler_returns_are_published_before_the_commit(self):
        broker = broker_with()
        await broker.publisher(NS).publish([request("r1", by="reply")])
        loop = await started(broker, commit_every_s=0)
        tally = loop.service
        await steps_until(loop, lambda: loop.ready)
        [reply] = tally.replies
        assert [r.offset for r in broker.records(RUNS)] == [0, 1]
        assert dict(broker.records(RUNS)[1].headers)["ce_id"] == reply.event_id.encode()
        assert broker.committed(GROUP, TP0) is not None

    async def test_a_publish_kafka_does_not_acknowledge_is_sent_again(self):
        broker = broker_with()
        publisher = broker.publisher(NS)
        tally = Tally()
        loop = tally_loop(tally, broker.consumer(GROUP), publisher)
        publisher.failures = 2
        await loop.publish([request("r1")])
        assert publisher.failures == 0
        assert len(broker.records(RUNS)) == 1


async def live_with_work_at_1():
    """A live loop (committing at every step) over r0, r1 (work not done yet) and r2."""
    broker = broker_with()
    await broker.publisher(NS).publish([request("r0"), request("r1", by="work"), request("r2")])
    loop = await started(broker, commit_every_s=0)
    await steps_until(loop, lambda: loop.ready)
    return broker, loop


class TestCommits:
    async def test_only_what_the_service_declares_safe_is_committed_with_its_metadata(self):
        broker, loop = await live_with_work_at_1()
        await loop.step()
        # read up to 3, but the work of offset 1 is not done
        assert broker.committed(GROUP, TP0) == Commit(3, "lw=1")
        loop.parts[TP0].state.pending.clear()
        await loop.step()
        assert broker.committed(GROUP, TP0) == Commit(3, "lw=3")

    async def test_nothing_is_committed_while_a_partition_replays(self):
        broker = broker_with()
        await broker.publisher(NS).publish([request(f"r{n}") for n in range(5)])
        loop = await started(broker, commit_every_s=0, max_records=2)
        await loop.step()
        assert not loop.ready and broker.committed(GROUP, TP0) is None

    async def test_a_new_owner_starts_where_the_committed_metadata_says(self):
        broker, loop = await live_with_work_at_1()
        await loop.close()
        assert broker.committed(GROUP, TP0) == Commit(3, "lw=1")
        successor = await started(broker)
        second = successor.service
        await steps_until(successor, lambda: successor.ready)
        assert second.starts == {TP0: Commit(3, "lw=1")}
        assert [o for o, _, _ in successor.parts[TP0].state.seen] == [1, 2]


class TestRebalances:
    async def test_partitions_are_shared_and_a_revoked_one_is_committed_and_dropped(self):
        broker = broker_with(partitions=2)
        publisher = broker.publisher(NS)
        await publisher.publish([request(f"r{n}") for n in range(8)])
        loop_a = await started(broker, commit_every_s=60)
        a = loop_a.service
        await steps_until(loop_a, lambda: loop_a.ready)
        assert len(loop_a.parts) == 2
        loop_b = await started(broker, commit_every_s=60)
        await steps_until(loop_b, lambda: loop_b.ready)
        await steps_until(loop_a, lambda: loop_a.ready and len(loop_a.parts) == 1)
        assert set(loop_a.parts).isdisjoint(loop_b.parts)
        assert set(loop_a.parts) | set(loop_b.parts) == set(broker.partitions(RUNS))
        # each of a's partitions was revoked and committed on the way out
        assert sorted(a.revoked_parts) == sorted(broker.partitions(RUNS))
        for tp in broker.partitions(RUNS):
            assert broker.committed(GROUP, tp) is not None
        # b replayed its partition from what a committed: nothing again
        [tp_b] = loop_b.parts
        assert loop_b.parts[tp_b].state.seen == []

    async def test_a_stopped_member_leaves_its_partitions_to_the_others(self):
        broker = broker_with(partitions=2)
        loop_a = await started(broker)
        loop_b = await started(broker)
        b = loop_b.service
        await steps_until(loop_a, lambda: loop_a.ready)
        await steps_until(loop_b, lambda: loop_b.ready)
        await loop_b.close()
        await steps_until(loop_a, lambda: len(loop_a.parts) == 2 and loop_a.ready)
        assert b.drained


class TestBackpressureSweepAndStop:
    async def test_no_room_pauses_every_partition_and_room_resumes_them(self):
        broker = broker_with()
        loop = await started(broker)
        tally = loop.service
        await steps_until(loop, lambda: loop.ready)
        await broker.publisher(NS).publish([request(f"r{n}") for n in range(5)])
        tally.room_left = 0
        for _ in range(3):
            await loop.step()
        assert loop.parts[TP0].state.seen == []
        assert loop._consumer.paused() == {TP0}
        tally.room_left = 2
        await loop.step()
        assert len(loop.parts[TP0].state.seen) == 2 and loop._consumer.paused() == set()

    async def test_the_sweep_runs_periodically_and_commits(self):
        broker = broker_with()
        await broker.publisher(NS).publish([request("r0")])
        loop = await started(broker, commit_every_s=60, sweep_every_s=0.02)
        tally = loop.service
        try:
            await steps_until(loop, lambda: loop.ready)
            async with asyncio.timeout(2):
                while tally.swept < 2 or broker.committed(GROUP, TP0) is None:
                    await asyncio.sleep(0.01)
        finally:
            await loop.close()

    async def test_run_stops_when_asked_after_the_service_drained_and_committed(self):
        broker = broker_with()
        await broker.publisher(NS).publish([request("r0")])
        tally = Tally()
        loop = tally_loop(tally, broker.consumer(GROUP), broker.publisher(NS), commit_every_s=60)
        stopping = asyncio.Event()
        running = asyncio.create_task(loop.run(stopping))
        async with asyncio.timeout(2):
            while not loop.ready:
                await asyncio.sleep(0.01)
        stopping.set()
        await asyncio.wait_for(running, 2)
        assert tally.drained
        assert broker.committed(GROUP, TP0) == Commit(1, "lw=1")


def test_a_handler_for_a_type_the_event_map_lacks_is_refused():
    broker = broker_with()
    tally = Tally()
    with pytest.raises(ValueError, match=r"hookrun\.run\.cancel_requested"):
        ConsumeLoop(
            tally,
            consumer=broker.consumer(GROUP),
            publisher=broker.publisher(NS),
            topics=[topics.RUNS],
            events=EVENTS,
            handlers={RunCancelRequested: [tally.note]},
        )


def test_a_record_encoded_by_the_codec_carries_the_headers_the_filter_reads():
    headers = dict(encode(request("r1")).headers)
    assert headers["ce_type"] == RedeliveryRequested.type.encode()
    assert "ce_id" in headers
