"""Payload inputs of pipelines read by position from their launches, on the real broker."""

from __future__ import annotations

import asyncio
import base64
import uuid

import pytest
from aiokafka import AIOKafkaConsumer

from hookrun.dev.pytest_kafka import new_namespace
from hookrun.events import topics
from hookrun.events.kafka import Publisher, consumer_settings, ensure_topics, partitions_of
from hookrun.events.runs import LaunchRef, LaunchRequest, PipelineDefined, TriggerLaunched
from hookrun.runner.context import SourceLoading, SourceUnavailable
from hookrun.runner.payloads import LaunchReader
from hookrun.runner.pipelines import KafkaPipelineIndex

pytestmark = pytest.mark.kafka


def launch(body: bytes) -> TriggerLaunched:
    return TriggerLaunched(
        run_id=str(uuid.uuid4()),
        trigger_id="chain",
        config_version="v",
        request=LaunchRequest(method="POST", path="/", body_b64=base64.b64encode(body).decode()),
    )


async def published(bootstrap: str, ns: str, launches: list[TriggerLaunched]) -> list[LaunchRef]:
    """Append ``launches`` to the runs topic; return where each landed."""
    publisher = Publisher(bootstrap, "test", namespace=ns)
    await publisher.start(wait=True)
    try:
        await publisher.publish(launches)
    finally:
        await publisher.stop()
    consumer = AIOKafkaConsumer(**consumer_settings(bootstrap, "test", group=None))
    await consumer.start()
    found: dict[str, LaunchRef] = {}
    try:
        tps = await partitions_of(consumer, topics.named(topics.RUNS, ns))
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        async with asyncio.timeout(20):
            while len(found) < len(launches):
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    for r in records:
                        run_id = (r.key or b"").decode()
                        found[run_id] = LaunchRef(
                            run_id=run_id, partition=r.partition, offset=r.offset
                        )
    finally:
        await consumer.stop()
    return [found[e.run_id] for e in launches]


def definition(i: int, ref: LaunchRef) -> PipelineDefined:
    return PipelineDefined(
        pipeline_id=f"p-{i}",
        run_id=ref.run_id,
        pipeline_name="chain",
        action_index=0,
        nodes={"a": "node_a"},
        payload_inputs={"a": ["payload"]},
        payload_from=ref,
        trigger_id="chain",
    )


async def looked_up(index: KafkaPipelineIndex, pipeline_id: str) -> PipelineDefined | None:
    """What a copy gets: the lookup, again after the read it started."""
    read = asyncio.Event()
    index.reader.on_read = read.set
    try:
        return index.lookup(pipeline_id)
    except SourceLoading:
        await asyncio.wait_for(read.wait(), 15)
        return index.lookup(pipeline_id)


async def test_the_index_reads_each_payload_input_from_its_launch_in_bounded_memory(
    kafka_bootstrap,
):
    ns = new_namespace()
    await ensure_topics(kafka_bootstrap, namespace=ns)
    bodies = [f"{i}:".encode() + b"b" * 300_000 for i in range(12)]
    refs = await published(kafka_bootstrap, ns, [launch(b) for b in bodies])
    cap = 1_000_000  # three of these bodies in base64
    index = KafkaPipelineIndex(
        kafka_bootstrap,
        namespace=ns,
        reader=LaunchReader(kafka_bootstrap, namespace=ns, cache_chars=cap),
    )
    try:
        for i, ref in enumerate(refs):
            index.remember(definition(i, ref))
        for i, body in enumerate(bodies):
            full = await looked_up(index, f"p-{i}")
            assert full is not None
            assert base64.b64decode(full.inputs_b64["a"]["payload"]) == body
            assert index.reader.bodies.size <= cap
        # the oldest again: read once more from its launch
        first = await looked_up(index, "p-0")
        assert first is not None
        assert base64.b64decode(first.inputs_b64["a"]["payload"]) == bodies[0]
    finally:
        await index.stop()


async def test_a_reference_to_no_launch_fails_the_lookup_instead_of_waiting(kafka_bootstrap):
    ns = new_namespace()
    await ensure_topics(kafka_bootstrap, namespace=ns)
    [ref] = await published(kafka_bootstrap, ns, [launch(b"{}")])
    index = KafkaPipelineIndex(kafka_bootstrap, namespace=ns)
    try:
        index.remember(definition(1, ref.model_copy(update={"run_id": "another-run"})))
        index.remember(definition(2, ref.model_copy(update={"offset": ref.offset + 1000})))
        with pytest.raises(SourceUnavailable, match="is not its launch"):
            await looked_up(index, "p-1")
        with pytest.raises(SourceUnavailable, match="ends before offset"):
            await looked_up(index, "p-2")
    finally:
        await index.stop()


async def test_the_index_reads_the_pipelines_topic_from_its_first_catch_up_not_before(
    kafka_bootstrap,
):
    ns = new_namespace()
    await ensure_topics(kafka_bootstrap, namespace=ns)
    [ref] = await published(kafka_bootstrap, ns, [launch(b"{}")])
    other_runner = Publisher(kafka_bootstrap, "test", namespace=ns)
    await other_runner.start(wait=True)
    index = KafkaPipelineIndex(kafka_bootstrap, namespace=ns)
    try:
        await other_runner.publish([definition(i, ref) for i in range(3)])
        await asyncio.sleep(0.5)
        assert len(index) == 0  # nothing read while no run needed a definition
        await index.catch_up()
        found = index.lookup("p-2", with_payload=False)
        assert found is not None and found.payload_from == ref
        # and followed from then on: read-your-writes across runners
        await other_runner.publish([definition(3, ref)])
        await index.catch_up()
        assert index.lookup("p-3", with_payload=False) is not None
    finally:
        await index.stop()
        await other_runner.stop()
