"""The pipeline index keeps definitions without their payload bodies, in bounded memory."""

from __future__ import annotations

import asyncio
import gc
import sys
import types

import pytest

from hookrun.config import parse_config
from hookrun.events.kafka import TopicTable
from hookrun.events.runs import LaunchRef, PipelineDefined
from hookrun.runner.context import SourceLoading, SourceUnavailable
from hookrun.runner.payloads import Bodies, LaunchReader
from hookrun.runner.pipelines import DefinitionStore, KafkaPipelineIndex
from hookrun.runner.reconcile import reconcile
from tests.runner.test_handlers import CONFIG, ctx, new_run

#: Nothing listens here: the index is never started, only fed.
NOWHERE = "127.0.0.1:9"


def held_bytes(root: object) -> int:
    """Bytes of the objects ``root`` holds (its Kafka client settings and code left out)."""
    skip = (type, types.ModuleType, types.FunctionType, types.BuiltinFunctionType, TopicTable)
    seen: set[int] = set()
    stack, total = [root], 0
    while stack:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, skip) or isinstance(obj, asyncio.AbstractEventLoop):
            continue
        seen.add(id(obj))
        total += sys.getsizeof(obj)
        stack.extend(gc.get_referents(obj))
    return total


@pytest.fixture
def config(tmp_path):
    return parse_config(CONFIG, str(tmp_path / "hookrun.yaml"))


def defined(config, i: int, payload_bytes: int) -> PipelineDefined:
    """The definition a chain run with a large payload input writes."""
    run = new_run("chain", {"x": i, "blob": "p" * payload_bytes}, run_id=f"run-{i}", offset=i)
    event = reconcile(run, ctx(config)).events[2]
    assert isinstance(event, PipelineDefined)
    return event


async def test_the_index_holds_memory_independent_of_how_many_pipelines_had_payloads(config):
    sizes = {}
    for n in (10, 40):
        index = KafkaPipelineIndex(NOWHERE)
        for i in range(n):
            index.remember(defined(config, i, 100_000))
        sizes[n] = held_bytes(index)
        assert index.lookup("nope") is None
        await index.stop()
    # 40 payloads of 100 kB would be 5 MB in base64
    assert sizes[40] < 50_000, sizes
    assert abs(sizes[40] - sizes[10]) < 2_000, sizes


async def test_a_lookup_reads_the_payload_input_once_and_the_cache_stays_bounded(config):
    reader = LaunchReader(NOWHERE, cache_chars=1_000_000)

    def read(ref: LaunchRef) -> None:
        """What a completed read leaves: the body in the cache."""
        reader.bodies.put((ref.run_id, ref.partition, ref.offset), f"body-{ref.run_id}" * 30_000)

    index = KafkaPipelineIndex(NOWHERE, reader=reader)
    definitions = [defined(config, i, 10) for i in range(30)]
    for d in definitions:
        index.remember(d)
    assert len(index) == 30
    for d in definitions:
        # without its payload input: answered at once, nothing is read
        assert index.lookup(d.pipeline_id, with_payload=False) == d
        assert d.payload_from is not None
        read(d.payload_from)
        full = index.lookup(d.pipeline_id)
        assert full is not None
        assert full.inputs_b64 == {"a": {"payload": f"body-{d.run_id}" * 30_000}}
        assert reader.bodies.size <= 1_000_000
    await index.stop()


async def test_an_uncached_payload_input_is_queued_once_and_a_failed_one_fails_the_lookup(
    config,
):
    reader = LaunchReader(NOWHERE)
    reader._work = lambda: asyncio.sleep(0)  # type: ignore[method-assign]  # no broker here
    index = KafkaPipelineIndex(NOWHERE, reader=reader)
    d = defined(config, 1, 10)
    index.remember(d)
    for _ in range(3):
        with pytest.raises(SourceLoading):
            index.lookup(d.pipeline_id)
    assert reader._queue.qsize() == 1
    assert d.payload_from is not None
    reader._fail(("run-1", 0, 1), "the payload input of run run-1 cannot be read: gone")
    with pytest.raises(SourceUnavailable, match="gone"):
        index.lookup(d.pipeline_id)
    await index.stop()


def test_the_body_cache_evicts_the_least_recently_used_down_to_its_limit():
    bodies = Bodies(limit=1_000)
    for i in range(10):
        bodies.put(("r", 0, i), "x" * 300)
        bodies.get(("r", 0, 0))  # kept in use
    assert bodies.size <= 1_000 and len(bodies) == 3
    assert bodies.get(("r", 0, 0)) is not None and bodies.get(("r", 0, 9)) is not None
    # one body over the limit is held alone
    bodies.put(("r", 0, 99), "y" * 5_000)
    assert len(bodies) == 1 and bodies.size == 5_000


def test_the_definition_store_keeps_the_first_definition_of_an_id(config):
    store = DefinitionStore()
    d = defined(config, 1, 10)
    store.put(d)
    store.put(d.model_copy(update={"pipeline_name": "other"}))
    assert store.get(d.pipeline_id) == d and len(store) == 1
    assert store.get("nope") is None
    store.close()


async def test_the_runs_woken_by_a_read_skip_the_catch_up_and_no_one_else_does():
    index = KafkaPipelineIndex(NOWHERE)
    caught_up: list[str] = []

    async def catch_up() -> None:
        caught_up.append("table")

    index._table.catch_up = catch_up  # type: ignore[method-assign]
    woken = asyncio.Event()

    async def wake() -> None:
        await index.catch_up()  # what the runner's dispatch of the waiting runs does first
        woken.set()

    index.when_read(wake)
    index.reader.on_read()
    await asyncio.wait_for(woken.wait(), 1)
    assert caught_up == []
    await index.catch_up()
    assert caught_up == ["table"]
    await index.stop()
