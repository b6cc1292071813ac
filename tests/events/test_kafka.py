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
