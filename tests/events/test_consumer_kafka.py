"""The consume loop on the real broker: replay, live, echoes and commits with metadata."""

import pytest
from aiokafka import TopicPartition

from hookrun.dev.pytest_kafka import new_namespace
from hookrun.events import topics
from hookrun.events.clients import Commit, GroupConsumer, consumer_settings
from hookrun.events.kafka import Publisher, ensure_topics
from tests.events.tally import Tally, request, steps_until, tally_loop

pytestmark = pytest.mark.kafka


async def test_the_loop_replays_goes_live_skips_its_echoes_and_commits_what_is_safe(
    kafka_bootstrap,
):
    ns = new_namespace()
    await ensure_topics(kafka_bootstrap, topics.specs(partitions=1, namespace=ns))
    tp = TopicPartition(topics.named(topics.RUNS, ns), 0)
    group = f"{ns}.tally"
    publisher = Publisher(kafka_bootstrap, "test", namespace=ns)
    await publisher.start(wait=True)

    def loop_for(tally):
        consumer = GroupConsumer(**consumer_settings(kafka_bootstrap, "test", group=group))
        return tally_loop(tally, consumer, publisher, commit_every_s=0)

    try:
        await publisher.publish([request("r0"), request("r1", by="work"), request("r2")])
        first = Tally()
        loop = loop_for(first)
        await loop.start()
        try:
            await steps_until(loop, lambda: loop.ready, timeout_s=30)
            sheet = loop.parts[tp].state
            assert [(o, live) for o, _, live in sheet.seen] == [(0, False), (1, False), (2, False)]
            # applied before publishing: its echo is skipped; another writer's event is not
            own = request("r-own")
            loop.expect_echo(tp, own)
            await loop.publish([own])
            await publisher.publish([request("r-other")])
            await steps_until(loop, lambda: len(sheet.seen) == 4, timeout_s=30)
            assert sheet.seen[-1] == (4, "r-other", True)
            assert len(loop.echoes) == 0
        finally:
            await loop.close()

        # the work of offset 1 is not done: the successor is told so and replays from there,
        # the echo included (the successor's state is rebuilt from the log)
        second = Tally()
        successor = loop_for(second)
        await successor.start()
        try:
            await steps_until(successor, lambda: successor.ready, timeout_s=30)
            assert second.starts == {tp: Commit(5, "lw=1")}
            assert [o for o, _, _ in successor.parts[tp].state.seen] == [1, 2, 3, 4]
        finally:
            await successor.close()
    finally:
        await publisher.stop()
