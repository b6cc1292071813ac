"""The Runner's consume path: an execution is prepared while its ExecutionCreated is in flight
and may start only once Kafka acknowledged that append; a replay reads a gap again; events
reach the handlers the table names."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka import TopicPartition

from hookrun.config import parse_config
from hookrun.events.base import utcnow
from hookrun.events.codec import Record, encode
from hookrun.events.kafka import KafkaUnavailable
from hookrun.events.runs import (
    ExecutionCreated,
    ExecutionHeartbeat,
    LaunchRequest,
    RunFinished,
    RunStarted,
    TriggerLaunched,
)
from hookrun.runner.consumer import Runner
from hookrun.runner.context import Plan
from hookrun.runner.executor import FakeExecutor
from hookrun.runner.handlers import HANDLERS, RECONCILE
from hookrun.runner.partitions import PartitionState
from hookrun.runner.pipelines import FakePipelineIndex

CONFIG = """
project: {id: p-1, slug: demo, name: Demo}
organization: {id: o-1, slug: acme, title: Acme}
environment: {id: e-1, slug: dev, type: DEVELOPMENT}
steps:
  - {name: noop, command: ["true"]}
triggers:
  - {id: noop, title: noop, actions: [{action: run_execution, step: noop}]}
"""


class HeldAcks:
    """A publisher whose acknowledgements the test gives (or refuses) by hand."""

    source = "hookrun/runner/test"

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
    runner.parts[0] = PartitionState(None, position=1, replay_end=0, live=True)  # type: ignore[arg-type]
    return runner, publisher, executor


def _launch(runner: Runner) -> Any:
    launched = TriggerLaunched(
        run_id="run-1",
        trigger_id="noop",
        config_version="v",
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


class SeekingConsumer:
    """The consumer calls a replay makes: where it was sought to, and its position."""

    def __init__(self) -> None:
        self.sought: list[tuple[Any, int]] = []
        self.positions: dict[Any, int] = {}

    def seek(self, tp: Any, offset: int) -> None:
        self.sought.append((tp, offset))
        self.positions[tp] = offset

    async def position(self, tp: Any) -> int:
        return self.positions[tp]

    async def commit(self, offsets: Any) -> None:
        pass


def _record(tp: TopicPartition, offset: int, event: Any) -> Any:
    encoded = encode(event)
    return SimpleNamespace(
        topic=tp.topic,
        partition=tp.partition,
        offset=offset,
        key=encoded.key,
        value=encoded.value,
        headers=encoded.headers,
    )


def _launched_and_started() -> tuple[TriggerLaunched, RunStarted]:
    """run-1's launch and start, as another runner appended them."""
    launched = TriggerLaunched(
        run_id="run-1",
        trigger_id="noop",
        config_version="v",
        request=LaunchRequest(method="POST", path="/", body_b64=""),
    )
    started = RunStarted(run_id="run-1", trigger_id="noop", runner_id="runner-old", action_count=1)
    return launched, started


async def test_a_replay_that_meets_a_gap_reads_the_partition_again_from_its_position(
    tmp_path: Path,
) -> None:
    # A fetch that raced the seek to the replay start answers from offset 1: taking that as the
    # start would lose the run's TriggerLaunched at offset 0 and leave the run unfinished.
    runner, _, _ = _runner(tmp_path)
    consumer = SeekingConsumer()
    runner.consumer = consumer  # type: ignore[assignment]
    tp = TopicPartition("hookrun.runs", 0)
    runner.parts = {0: PartitionState(tp, position=0, replay_end=5, live=False)}
    launched, started = _launched_and_started()

    await runner._handle({tp: [_record(tp, 1, started)]})
    assert consumer.sought == [(tp, 0)]
    assert runner.parts[0].position == 0 and "run-1" not in runner.table.runs

    await runner._handle({tp: [_record(tp, 0, launched), _record(tp, 1, started)]})
    assert runner.parts[0].position == 2
    assert runner.table.runs["run-1"].launched is not None


class TestDispatch:
    def test_heartbeats_and_run_finished_trigger_nothing_every_other_run_event_reconciles(self):
        assert HANDLERS[ExecutionHeartbeat] == () and HANDLERS[RunFinished] == ()
        others = {cls for cls in HANDLERS if cls not in (ExecutionHeartbeat, RunFinished)}
        assert {HANDLERS[cls] for cls in others} == {RECONCILE}

    async def test_the_loop_runs_the_handlers_the_table_names_once_per_run_and_batch(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        runner, _, _ = _runner(tmp_path)
        runner.consumer = SeekingConsumer()  # type: ignore[assignment]
        tp = TopicPartition("hookrun.runs", 0)
        runner.parts = {0: PartitionState(tp, position=0, replay_end=0, live=True)}
        calls: list[str] = []

        def spy(run: Any, ctx: Any) -> Plan:
            calls.append(run.run_id)
            return Plan()

        table = {TriggerLaunched: (spy,), RunStarted: (spy,), ExecutionHeartbeat: ()}
        monkeypatch.setattr("hookrun.runner.consumer.HANDLERS", table)
        launched, started = _launched_and_started()
        beat = ExecutionHeartbeat(
            run_id="run-1", execution_id="ex", runner_id="r", lease_until=utcnow()
        )

        # two events of one run in one batch: its handler runs once
        await runner._handle({tp: [_record(tp, 0, launched), _record(tp, 1, started)]})
        assert calls == ["run-1"]
        # a heartbeat triggers no handler
        await runner._handle({tp: [_record(tp, 2, beat)]})
        assert calls == ["run-1"]
