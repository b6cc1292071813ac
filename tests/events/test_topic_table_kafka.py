"""TopicTable and Publisher on the real broker: catch-ups and producers that recover."""

import pytest

from hookrun.dev.pytest_kafka import new_namespace
from hookrun.events import topics
from hookrun.events.kafka import Publisher, TopicTable, ensure_topics
from tests.events.tally import request

pytestmark = pytest.mark.kafka


async def test_catching_up_an_idle_table_does_not_wait_for_its_idle_fetch(kafka_bootstrap):
    ns = new_namespace()
    await ensure_topics(kafka_bootstrap, topics.specs(partitions=3, namespace=ns))
    seen: list[str] = []
    # The broker holds the follower's fetch up to 5 s while nothing arrives; a catch-up must
    # not queue its ListOffsets behind it (each must end well within its 2 s bound).
    table = TopicTable(
        kafka_bootstrap,
        "test",
        topics.named(topics.RUNS, ns),
        lambda event: seen.append(event.run_id),
        catch_up_timeout_s=2.0,
        fetch_max_wait_ms=5000,
    )
    publisher = Publisher(kafka_bootstrap, "test", namespace=ns)
    await publisher.start(wait=True)
    await table.start()
    try:
        await table.catch_up()
        for n in range(3):
            await table.catch_up()  # idle: nothing new since the last one
            await publisher.publish([request(f"r{n}")])
            await table.catch_up()  # read-your-writes
            assert seen[-1] == f"r{n}"
    finally:
        await table.stop()
        await publisher.stop()


async def test_a_producer_kafka_refuses_for_good_is_replaced_and_sending_goes_on(kafka_bootstrap):
    import asyncio

    from aiokafka.errors import OutOfOrderSequenceNumber

    from hookrun.events.kafka import KafkaUnavailable

    ns = new_namespace()
    await ensure_topics(kafka_bootstrap, topics.specs(partitions=1, namespace=ns))
    publisher = Publisher(kafka_bootstrap, "test", namespace=ns)
    await publisher.start(wait=True)
    try:
        broken = publisher._producer
        # What a broker restart can leave an idempotent producer with: every later send of
        # the same producer fails (before, the notifier resent into it for ever).
        refused = asyncio.get_running_loop().create_future()
        refused.set_exception(OutOfOrderSequenceNumber())
        with pytest.raises(KafkaUnavailable):
            await publisher.wait([refused])
        assert not publisher.ready
        async with asyncio.timeout(30):
            while not publisher.ready:
                await asyncio.sleep(0.05)
        assert publisher._producer is not broken
        await publisher.publish([request("after")])  # acknowledged by the new producer
    finally:
        await publisher.stop()
