"""The projection on the in-memory broker and a real SQLite store: it stores what it reads, and a
store or a dead-letter queue that fails for a while only delays it (not ready meanwhile)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from aiokafka import TopicPartition

from hookrun.events import RunStatus, topics
from hookrun.events.memory import MemoryBroker
from hookrun.status.projector import Projector
from hookrun.status.sqlite import SqliteStore
from tests.status.factories import launched, run_events

NS = "t-status-mem"


class Failing(SqliteStore):
    """A real SQLite store whose next ``failures`` transactions fail, as on a full disk."""

    failures = 0

    async def _apply(self, *args: Any) -> Any:
        if self.failures:
            self.failures -= 1
            raise OSError(28, "No space left on device")
        return await super()._apply(*args)


def _run(run_id: str) -> list[Any]:
    launch = launched("tok", run_id=run_id)
    return [launch, *run_events(launch, [RunStatus.SUCCESS])]


async def _until(predicate: Any, timeout_s: float = 10.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not predicate():
            await asyncio.sleep(0.01)


async def _stored(store: SqliteStore, run_id: str, timeout_s: float = 10.0) -> None:
    async with asyncio.timeout(timeout_s):
        while await store.run_info(run_id) is None:
            await asyncio.sleep(0.01)


async def _started(tmp_path: Path, broker: MemoryBroker, store: SqliteStore, publisher: Any):
    projector = Projector(
        store,
        "unused:9092",
        namespace=NS,
        publisher=publisher,
        consumer=lambda: broker.consumer(None),
    )
    return projector, asyncio.create_task(projector.run())


async def _stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_a_store_that_fails_for_a_while_delays_the_projection_and_loses_nothing(tmp_path):
    broker = MemoryBroker()
    broker.create_topics(NS, partitions=2)
    store = Failing(tmp_path / "status.db")
    await store.open()
    publisher = broker.publisher(NS, "gateway")
    projector, task = await _started(tmp_path, broker, store, broker.publisher(NS, "status"))
    try:
        await publisher.publish(_run("run-1"))
        await _stored(store, "run-1")
        assert projector.ready

        store.failures = 3  # the disk fills up: three tries to store the next batch fail
        await publisher.publish(_run("run-2"))
        await _until(lambda: projector.failing is not None)
        assert not projector.ready and "No space left" in projector.failing
        await _stored(store, "run-2", timeout_s=15)  # retried with backoff
        assert store.failures == 0
        await _until(lambda: projector.ready)  # set once the write's task has returned
        assert not task.done()
    finally:
        await _stop(task)
        await store.close()


async def test_a_dead_letter_kafka_refuses_for_a_while_is_sent_again(tmp_path):
    broker = MemoryBroker()
    broker.create_topics(NS, partitions=1)
    store = SqliteStore(tmp_path / "status.db")
    await store.open()
    own = broker.publisher(NS, "status")
    projector, task = await _started(tmp_path, broker, store, own)
    try:
        await _until(lambda: projector.ready)
        own.failures = 2  # Kafka refuses the first two tries to dead-letter
        runs = topics.named(topics.RUNS, NS)
        broker.append(
            runs, b"{not json", key=b"run-x", headers=[("ce_type", b"hookrun.run.started")]
        )
        await broker.publisher(NS, "gateway").publish([launched("tok", run_id="run-3")])
        await _until(lambda: bool(broker.records(topics.named(topics.dlq(topics.RUNS), NS))))
        await _stored(store, "run-3")
        assert projector.failing is None and projector.ready
        assert not task.done()
    finally:
        await _stop(task)
        await store.close()


async def test_control_records_between_fetches_cost_no_re_read(tmp_path, caplog):
    # The gateway appends launches in transactions: each leaves a control record, an offset
    # no consumer reads, between the records of a partition.
    caplog.set_level(logging.INFO, logger="hookrun.status.projector")
    broker = MemoryBroker()
    broker.create_topics(NS, partitions=1)
    store = SqliteStore(tmp_path / "status.db")
    await store.open()
    projector, task = await _started(tmp_path, broker, store, None)
    runs = topics.named(topics.RUNS, NS)
    gateway = broker.publisher(NS, "gateway")
    try:
        await _until(lambda: projector.ready)
        for n in range(5):
            launch = launched("tok", run_id=f"run-{n}")
            await gateway.publish([launch])
            marker = broker.append(runs, None, key=b"", headers=[])[1]
            broker.remove(TopicPartition(runs, 0), [marker])
            await gateway.publish(run_events(launch, [RunStatus.SUCCESS]))
            await _stored(store, f"run-{n}")
        assert "re-reading" not in caplog.text
    finally:
        await _stop(task)
        await store.close()
