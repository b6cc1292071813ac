"""A run that copies a pipeline waits while the pipelines topic cannot be read; the runner and
its other runs go on (the Runner on the in-memory broker)."""

from __future__ import annotations

from pathlib import Path

from hookrun.config import parse_config
from hookrun.events.kafka import KafkaUnavailable
from hookrun.events.memory import MemoryBroker
from hookrun.runner.consumer import Runner
from hookrun.runner.executor import FakeExecutor
from hookrun.runner.pipelines import FakePipelineIndex
from tests.events.tally import steps_until
from tests.runner.test_config_versions import HEAD, NS, finished, launched

CONFIG = (
    HEAD
    + """
steps:
  - {name: say, command: ["true"]}
triggers:
  - {id: say, title: say, actions: [{action: run_execution, step: say}]}
  - id: copy
    title: copy
    actions: [{action: copy_pipeline, source_pipeline_id: "nope", from_any_trigger: true}]
"""
)


class Unreadable(FakePipelineIndex):
    def __init__(self) -> None:
        super().__init__()
        self.down = True

    async def catch_up(self) -> None:
        if self.down:
            raise KafkaUnavailable("hookrun.pipelines: could not catch up: TimeoutError()")


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
        launches = [launched(config.config_version, f"run-{t}", t) for t in ("copy", "say")]
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
