"""Our murmur2 equals aiokafka's (and so the Java client's) for every key."""

from aiokafka.partitioner import murmur2 as aiokafka_murmur2
from hypothesis import given, settings
from hypothesis import strategies as st

from hookrun.events.murmur import murmur2, partition_for


@settings(max_examples=2000)
@given(st.binary(max_size=80))
def test_murmur2_matches_aiokafka_for_any_key(key):
    assert murmur2(key) == aiokafka_murmur2(key)


def test_a_run_id_lands_where_aiokafka_would_put_it():
    key = b"01a20990-9564-7c67-b2d1-dbd512111145"
    assert partition_for(key, 6) == (aiokafka_murmur2(key) & 0x7FFFFFFF) % 6
