"""A run that copies a pipeline waits while the pipelines topic cannot be read; the runner and
its other runs go on (the Runner on the in-memory broker)."""

from __future__ import annotations

import base64
from pathlib import Path

from hookrun.config import parse_config
from hookrun.events import decode, topics
from hookrun.events.kafka import KafkaUnavailable
from hookrun.events.memory import MemoryBroker
from hookrun.events.runs import LaunchRequest, RunFinished, TriggerLaunched
from hookrun.runner.consumer import Runner
from hookrun.runner.executor import FakeExecutor
from hookrun.runner.pipelines import FakePipelineIndex
from tests.events.tally import steps_until

CONFIG = """
project: {id: p-1, slug: demo, name: Demo}
organization: {id: o-1, slug: acme, title: Acme}
environment: {id: e-1, slug: dev, type: DEVELOPMENT}
steps:
  - {name: say, command: ["true"]}
triggers:
  - {id: say, title: say, actions: [{action: run_execution, step: say}]}
  - id: copy
    title: copy
    actions: [{action: copy_pipeline, source_pipeline_id: "nope", from_any_trigger: true}]
"""
NS = "t-pipelines-unreadable"


class Unreadable(FakePipelineIndex):
    def __init__(self) -> None:
        super().__init__()
        self.down = True

    async def catch_up(self) -> None:
        if self.down:
            raise KafkaUnavailable("hookrun.pipelines: could not catch up: TimeoutError()")


def launched(trigger_id: str, version: str) -> TriggerLaunched:
    return TriggerLaunched(
        run_id=f"run-{trigger_id}",
        trigger_id=trigger_id,
        config_version=version,
        request=LaunchRequest(method="POST", path="/", body_b64=base64.b64encode(b"{}").decode()),
    )


def finished(broker: MemoryBroker, run_id: str) -> RunFinished | None:
    for record in broker.records(topics.named(topics.RUNS, NS), 0):
        event = decode(record.value, record.headers)
        if isinstance(event, RunFinished) and event.run_id == run_id:
            return event
    return None


async def test_a_copy_waits_for_the_pipelines_topic_and_other_runs_go_on(tmp_path: Path) -> None:
    broker = MemoryBroker()
    broker.create_topics(NS, partitions=1)
    executor = FakeExecutor()
    index = Unreadable()
    config = parse_config(CONFIG, str(tmp_path / "hookrun.yaml"))
    runner = Runner(
        config=config,
        consumer=broker.consumer("runner"),
        publisher=broker.publisher(NS, "runner"),
        index=index,
        data_dir=tmp_path,
        runner_id="runner-test",
        lease_s=2,  # every owned run is reconciled again each second
        concurrency=8,
        executor=executor,
    )
    await runner.loop.start()
    try:
        await steps_until(runner.loop, lambda: runner.loop.ready)
        launches = [launched(t, config.config_version) for t in ("copy", "say")]
        await broker.publisher(NS, "gateway").publish(launches)
        await steps_until(runner.loop, lambda: bool(executor.submitted))
        assert [s.step for s in executor.submitted.values()] == ["say"]
        assert finished(broker, "run-copy") is None  # waits, not failed for a broker's hiccup

        index.down = False
        await steps_until(runner.loop, lambda: finished(broker, "run-copy") is not None)
        done = finished(broker, "run-copy")
        assert done is not None and "nope" in str(done.error)  # copied nothing: no such source
    finally:
        await runner.loop.close()
