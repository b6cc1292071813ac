"""Kafka helpers of hookrun.events that need no broker."""

import uuid

from aiokafka.partitioner import DefaultPartitioner

from hookrun.events.kafka import KeyHashPartitioner


def test_key_hash_partitioner_places_keys_as_the_default_partitioner() -> None:
    partitioner = KeyHashPartitioner(max_keys=8)
    keys = [str(uuid.uuid4()).encode() for _ in range(50)]
    for partitions in ([0], [0, 1, 2], list(range(12))):
        # twice: the second round is answered from the cache (and overflows it)
        for key in keys + keys:
            assert partitioner(key, partitions, partitions) == DefaultPartitioner()(
                key, partitions, partitions
            )


def test_key_hash_partitioner_spreads_keyless_records_over_available_partitions() -> None:
    partitioner = KeyHashPartitioner()
    assert {partitioner(None, [0, 1, 2], [1]) for _ in range(20)} == {1}


async def test_a_publisher_is_not_ready_from_an_unacknowledged_send_to_an_acknowledged_one():
    import asyncio

    from aiokafka.errors import KafkaTimeoutError

    from hookrun.events.kafka import KafkaUnavailable, Publisher

    publisher = Publisher("127.0.0.1:9", "test", send_timeout_s=1)
    publisher._ready.set()  # as once connected
    loop = asyncio.get_running_loop()
    refused = loop.create_future()
    refused.set_exception(KafkaTimeoutError())
    try:
        await publisher.wait([refused])
    except KafkaUnavailable:
        pass
    assert not publisher.ready
    acked = loop.create_future()
    acked.set_result(None)
    await publisher.wait([acked])
    assert publisher.ready
