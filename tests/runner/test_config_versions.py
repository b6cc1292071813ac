"""A run is performed with the config version it was launched with, looked up among the recorded
versions when the runner loaded another one (ConfigVersions, and the Runner on the in-memory
broker)."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import pytest

from hookrun.config import HookrunConfig, parse_config
from hookrun.events import decode, topics
from hookrun.events.base import utcnow
from hookrun.events.memory import MemoryBroker
from hookrun.events.runs import (
    ErrorDetail,
    ExecutionFinished,
    LaunchRequest,
    RunFinished,
    RunStatus,
    TriggerLaunched,
)
from hookrun.runner.consumer import Runner
from hookrun.runner.executor import FakeExecutor
from hookrun.runner.pipelines import FakePipelineIndex
from hookrun.runner.versions import ConfigVersions, FakeConfigStore
from tests.events.tally import steps_until

HEAD = """
project: {id: p-1, slug: demo, name: Demo}
organization: {id: o-1, slug: acme, title: Acme}
environment: {id: e-1, slug: dev, type: DEVELOPMENT}
"""
V1 = (
    HEAD
    + """
steps:
  - name: say
    command: ["echo", "v1", "{config_dir}"]
    env: {TOKEN: "${env:HOOKRUN_TEST_STEP_TOKEN}"}
triggers:
  - id: say
    title: say
    conditions: [{type: static_secret, header: X-Token, secret: "${env:HOOKRUN_TEST_SECRET}"}]
    actions: [{action: run_execution, step: say}]
"""
)
V2 = (
    HEAD
    + """
steps:
  - {name: say, command: ["echo", "v2"]}
  - {name: other, command: ["true"]}
triggers:
  - {id: say, title: say, actions: [{action: run_execution, step: other}]}
"""
)
NS = "t-config-versions"


def version_of(text: str) -> str:
    """The version the loader gives a file with this text."""
    return hashlib.sha256(text.encode()).hexdigest()[:12]


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOOKRUN_TEST_SECRET", "condition-secret")
    monkeypatch.setenv("HOOKRUN_TEST_STEP_TOKEN", "step-token")


@pytest.fixture
def own(tmp_path: Path) -> HookrunConfig:
    return parse_config(V2, str(tmp_path / "hookrun.yaml"))


class TestConfigVersions:
    async def test_the_runners_own_version_needs_no_lookup(self, own: HookrunConfig) -> None:
        store = FakeConfigStore()
        assert await ConfigVersions(own, store).get(own.config_version) is own
        assert store.reads == 0

    async def test_a_recorded_version_is_parsed_once_with_this_runners_config_dir(
        self, own: HookrunConfig
    ) -> None:
        v1 = version_of(V1)
        store = FakeConfigStore({v1: V1})
        versions = ConfigVersions(own, store)
        config = await versions.get(v1)
        assert isinstance(config, HookrunConfig)
        assert config.config_version == v1
        assert config.step("say").command == ("echo", "v1", "{config_dir}")  # type: ignore[union-attr]
        assert config.config_dir == own.config_dir
        # the condition's `${env:}` is resolved here, from this runner's environment ...
        secret = config.trigger("say").conditions[0].secret  # type: ignore[union-attr]
        assert secret.get_secret_value() == "condition-secret"
        # ... the step's env at run time, as for the runner's own config
        assert config.step("say").env == {"TOKEN": "${env:HOOKRUN_TEST_STEP_TOKEN}"}  # type: ignore[union-attr]
        assert await versions.get(v1) is config
        assert store.reads == 1

    async def test_a_version_never_recorded_is_an_error_and_found_once_recorded(
        self, own: HookrunConfig
    ) -> None:
        store = FakeConfigStore()
        versions = ConfigVersions(own, store)
        v1 = version_of(V1)
        error = await versions.get(v1)
        assert isinstance(error, ErrorDetail) and error.name == "UnknownConfigVersion"
        assert v1 in error.message and own.config_version in error.message
        store.texts[v1] = V1
        assert isinstance(await versions.get(v1), HookrunConfig)

    async def test_a_version_this_runner_cannot_load_is_an_error(
        self, own: HookrunConfig, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.delenv("HOOKRUN_TEST_SECRET")
        v1 = version_of(V1)
        error = await ConfigVersions(own, FakeConfigStore({v1: V1})).get(v1)
        assert isinstance(error, ErrorDetail) and error.name == "InvalidConfigVersion"
        assert "HOOKRUN_TEST_SECRET is not set" in error.message
        assert "condition-secret" not in error.message

    async def test_parsed_versions_are_kept_in_a_bounded_lru(self, own: HookrunConfig) -> None:
        texts = {version_of(t): t for t in (V1 + f"# {n}\n" for n in range(3))}
        store = FakeConfigStore(texts)
        versions = ConfigVersions(own, store, size=2)
        first, second, third = texts
        await versions.get(first)
        await versions.get(second)
        await versions.get(first)  # used last: the second is the oldest now
        await versions.get(third)
        assert len(versions) == 2 and store.reads == 3
        await versions.get(first)
        assert store.reads == 3
        await versions.get(second)  # evicted: read again
        assert store.reads == 4 and len(versions) == 2


def launched(version: str, run_id: str = "run-1", trigger_id: str = "say") -> TriggerLaunched:
    return TriggerLaunched(
        run_id=run_id,
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


class TestRunnerPerformsTheLaunchedVersion:
    async def _start(
        self, tmp_path: Path, store: FakeConfigStore
    ) -> tuple[MemoryBroker, Runner, FakeExecutor]:
        broker = MemoryBroker()
        broker.create_topics(NS, partitions=1)
        executor = FakeExecutor()
        runner = Runner(
            config=parse_config(V2, str(tmp_path / "hookrun.yaml")),
            consumer=broker.consumer("runner"),
            publisher=broker.publisher(NS, "runner"),
            index=FakePipelineIndex(),
            data_dir=tmp_path,
            runner_id="runner-test",
            lease_s=30,
            concurrency=8,
            executor=executor,
            configs=store,
        )
        await runner.loop.start()
        await steps_until(runner.loop, lambda: runner.loop.ready)
        return broker, runner, executor

    async def test_a_run_launched_with_another_version_runs_that_versions_step(
        self, tmp_path: Path
    ) -> None:
        v1 = version_of(V1)
        broker, runner, executor = await self._start(tmp_path, FakeConfigStore({v1: V1}))
        await broker.publisher(NS, "gateway").publish([launched(v1)])
        await steps_until(runner.loop, lambda: bool(executor.submitted))
        (spec,) = executor.submitted.values()
        assert spec.step == "say"
        assert spec.argv == ["echo", "v1", str(tmp_path)]
        assert spec.env["TOKEN"] == "step-token"

        await runner.report(
            [
                ExecutionFinished(
                    run_id="run-1",
                    execution_id=spec.execution_id,
                    status=RunStatus.SUCCESS,
                    completed_at=utcnow(),
                    exit_code=0,
                )
            ]
        )
        done = finished(broker, "run-1")
        assert done is not None and done.status is RunStatus.SUCCESS
        assert done.config_version == v1
        await runner.loop.close()

    async def test_a_run_of_a_version_never_recorded_fails_and_runs_nothing(
        self, tmp_path: Path
    ) -> None:
        broker, runner, executor = await self._start(tmp_path, FakeConfigStore())
        await broker.publisher(NS, "gateway").publish([launched("0123456789ab")])
        await steps_until(runner.loop, lambda: finished(broker, "run-1") is not None)
        done = finished(broker, "run-1")
        assert done is not None and done.status is RunStatus.FAILURE
        assert done.error is not None and done.error.name == "UnknownConfigVersion"
        assert done.config_version == "0123456789ab"
        assert executor.submitted == {}
        await runner.loop.close()

    async def test_a_run_whose_version_cannot_be_read_now_waits_for_the_next_pass(
        self, tmp_path: Path
    ) -> None:
        v1 = version_of(V1)
        store = FakeConfigStore({v1: V1})
        store.down = True
        broker, runner, executor = await self._start(tmp_path, store)
        await broker.publisher(NS, "gateway").publish([launched(v1)])
        await steps_until(runner.loop, lambda: "run-1" in runner.table.runs)
        assert finished(broker, "run-1") is None and executor.submitted == {}
        store.down = False
        await runner.reconcile([runner.table.runs["run-1"]])  # the sweep's full pass
        (spec,) = executor.submitted.values()
        assert spec.argv[:2] == ["echo", "v1"]
        await runner.loop.close()
