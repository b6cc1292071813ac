"""The Runner's consume path: an execution is prepared while its ExecutionCreated is in flight
and may start only once Kafka acknowledged that append; events reach the handlers the table
names; a successor replays from the committed low watermark (on the in-memory broker)."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path
from typing import Any

import pytest
from aiokafka import TopicPartition

from hookrun.config import parse_config
from hookrun.events import topics
from hookrun.events.base import utcnow
from hookrun.events.codec import Record
from hookrun.events.kafka import KafkaUnavailable
from hookrun.events.memory import MemoryBroker
from hookrun.events.runs import (
    ExecutionCreated,
    ExecutionHeartbeat,
    Invocation,
    LaunchRequest,
    RunFinished,
    RunStarted,
    RunStatus,
    TriggerLaunched,
)
from hookrun.events.service import Partition
from hookrun.runner.consumer import Runner
from hookrun.runner.context import Plan
from hookrun.runner.executor import FakeExecutor
from hookrun.runner.handlers import HANDLERS, RECONCILE
from hookrun.runner.pipelines import FakePipelineIndex
from tests.events.tally import steps_until

CONFIG = """
project: {id: p-1, slug: demo, name: Demo}
organization: {id: o-1, slug: acme, title: Acme}
environment: {id: e-1, slug: dev, type: DEVELOPMENT}
steps:
  - {name: noop, command: ["true"]}
triggers:
  - {id: noop, title: noop, actions: [{action: run_execution, step: noop}]}
"""
#: The runs here are launched with the runner's own config version.
VERSION = parse_config(CONFIG, "hookrun.yaml").config_version


class HeldAcks:
    """A publisher whose acknowledgements the test gives (or refuses) by hand."""

    source = "hookrun/runner/test"
    namespace = topics.NAMESPACE
    ready = True

    def __init__(self) -> None:
        self.sent: list[Record] = []
        self.acks: list[asyncio.Future[Any]] = []

    async def send_record(self, record: Record) -> asyncio.Future[Any]:
        self.sent.append(record)
        ack: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.acks.append(ack)
        return ack

    async def wait(self, futures: list[asyncio.Future[Any]]) -> None:
        try:
            await asyncio.gather(*futures)
        except RuntimeError as exc:
            raise KafkaUnavailable("refused") from exc


def _runner(tmp_path: Path) -> tuple[Runner, HeldAcks, FakeExecutor]:
    publisher = HeldAcks()
    executor = FakeExecutor()
    runner = Runner(
        config=parse_config(CONFIG, str(tmp_path / "hookrun.yaml")),
        consumer=None,  # type: ignore[arg-type]
        publisher=publisher,  # type: ignore[arg-type]
        index=FakePipelineIndex(),
        data_dir=tmp_path,
        runner_id="runner-test",
        lease_s=30,
        concurrency=8,
        executor=executor,
    )
    tp = TopicPartition(topics.RUNS, 0)
    runner.loop.parts[tp] = Partition(tp, 0, position=1, replay_end=0, live=True)
    return runner, publisher, executor


def _launch(runner: Runner) -> Any:
    launched = TriggerLaunched(
        run_id="run-1",
        trigger_id="noop",
        config_version=VERSION,
        request=LaunchRequest(method="POST", path="/", body_b64=base64.b64encode(b"{}").decode()),
    )
    return runner.table.apply(launched, 0, 0)


async def _until(predicate: Any) -> None:
    for _ in range(100):
        if predicate():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition not reached")


async def test_an_execution_is_prepared_in_flight_and_released_only_once_acknowledged(
    tmp_path: Path,
) -> None:
    runner, publisher, executor = _runner(tmp_path)
    run = _launch(runner)
    task = asyncio.create_task(runner.reconcile([run]))
    await _until(lambda: publisher.acks)
    types = [dict(r.headers)["ce_type"].decode() for r in publisher.sent]
    assert types == [RunStarted.type, ExecutionCreated.type]
    # Submitted (prepared) while the append is in flight, but held: nothing may run yet.
    (execution_id,) = executor.submitted
    assert executor.held == {execution_id}
    for ack in publisher.acks:
        ack.set_result(None)
    await task
    assert executor.held == set()


async def test_an_execution_whose_append_fails_for_good_never_starts(tmp_path: Path) -> None:
    runner, publisher, executor = _runner(tmp_path)
    run = _launch(runner)
    task = asyncio.create_task(runner.reconcile([run]))
    await _until(lambda: publisher.acks)
    # A refused record (not retriable): the session stops, the held execution is discarded.
    exc = RuntimeError("record refused")
    for ack in publisher.acks:
        ack.set_exception(exc)
    with pytest.raises(KafkaUnavailable):
        await task
    assert executor.submitted == {} and executor.held == set()


NS = "t-runner-mem"


def _on_broker(tmp_path: Path, broker: MemoryBroker) -> tuple[Runner, FakeExecutor]:
    executor = FakeExecutor()
    runner = Runner(
        config=parse_config(CONFIG, str(tmp_path / "hookrun.yaml")),
        consumer=broker.consumer("runner"),
        publisher=broker.publisher(NS, "runner"),
        index=FakePipelineIndex(),
        data_dir=tmp_path,
        runner_id="runner-test",
        lease_s=30,
        concurrency=8,
        executor=executor,
    )
    return runner, executor


def _launched_and_started() -> tuple[TriggerLaunched, RunStarted]:
    """run-1's launch and start, as another runner appended them."""
    launched = TriggerLaunched(
        run_id="run-1",
        trigger_id="noop",
        config_version=VERSION,
        request=LaunchRequest(method="POST", path="/", body_b64=""),
    )
    started = RunStarted(run_id="run-1", trigger_id="noop", runner_id="runner-old", action_count=1)
    return launched, started


def _finished(run_id: str) -> RunFinished:
    return RunFinished(
        run_id=run_id,
        trigger_id="noop",
        config_version=VERSION,
        status=RunStatus.SUCCESS,
        started_at=utcnow(),
        completed_at=utcnow(),
        duration_ms=0,
        execution_count=0,
        invocation=Invocation(id=run_id, payload={}, timestamp=utcnow()),
    )


class TestDispatch:
    def test_heartbeats_and_run_finished_trigger_nothing_every_other_run_event_reconciles(self):
        assert HANDLERS[ExecutionHeartbeat] == () and HANDLERS[RunFinished] == ()
        others = {cls for cls in HANDLERS if cls not in (ExecutionHeartbeat, RunFinished)}
        assert {HANDLERS[cls] for cls in others} == {RECONCILE}

    async def test_the_loop_runs_the_handlers_the_table_names_once_per_run_and_batch(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        calls: list[str] = []

        def spy(run: Any, ctx: Any) -> Plan:
            calls.append(run.run_id)
            return Plan()

        table = {TriggerLaunched: (spy,), RunStarted: (spy,), ExecutionHeartbeat: ()}
        monkeypatch.setattr("hookrun.runner.consumer.HANDLERS", table)
        broker = MemoryBroker()
        broker.create_topics(NS, partitions=1)
        runner, _ = _on_broker(tmp_path, broker)
        await runner.loop.start()
        await steps_until(runner.loop, lambda: runner.loop.ready)
        publisher = broker.publisher(NS, "gateway")
        launched, started = _launched_and_started()
        beat = ExecutionHeartbeat(
            run_id="run-1", execution_id="ex", runner_id="r", lease_until=utcnow()
        )

        # two events of one run in one batch: its handler runs once
        await publisher.publish([launched, started])
        await steps_until(runner.loop, lambda: "run-1" in runner.table.runs)
        assert calls == ["run-1"]
        # a heartbeat triggers no handler
        await publisher.publish([beat])
        position = runner.loop.parts[TopicPartition(topics.named(topics.RUNS, NS), 0)]
        await steps_until(runner.loop, lambda: position.position == 3)
        assert calls == ["run-1"]
        await runner.loop.close()


class TestTakeover:
    async def test_a_successor_replays_from_the_oldest_unfinished_launch_and_reconciles_it(
        self, tmp_path: Path
    ) -> None:
        broker = MemoryBroker()
        broker.create_topics(NS, partitions=1)
        publisher = broker.publisher(NS, "gateway")
        first, executor = _on_broker(tmp_path, broker)
        await first.loop.start()
        await steps_until(first.loop, lambda: first.loop.ready)
        launched, _ = _launched_and_started()
        await publisher.publish([launched])
        # the first runner starts the run's execution (held by the fake executor) ...
        await steps_until(first.loop, lambda: bool(executor.submitted))
        for n in range(3):  # ... and other runs come and finish after it
            await publisher.publish(
                [
                    launched.model_copy(update={"run_id": f"done-{n}", "event_id": f"l{n}"}),
                    _finished(f"done-{n}"),
                ]
            )
        tp = TopicPartition(topics.named(topics.RUNS, NS), 0)
        end = broker.records(tp.topic, 0)[-1].offset + 1
        await steps_until(first.loop, lambda: first.loop.parts[tp].position == end)
        await first.loop.commit()
        committed = broker.committed("runner", tp)
        assert committed is not None and committed.offset == end
        assert committed.metadata == "lw=0"  # run-1's launch: still unfinished
        await first.loop.close()  # the runner dies with its execution unfinished

        successor, executor = _on_broker(tmp_path, broker)
        await successor.loop.start()
        await steps_until(successor.loop, lambda: successor.loop.ready and executor.submitted)
        # replayed from run-1's launch, not from the committed position: run-1 goes on here
        assert set(successor.table.runs) == {"run-1"}
        await successor.loop.close()
