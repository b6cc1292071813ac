"""The runner's state machine and reconcile, driven directly with events and a fake clock."""

from __future__ import annotations

import base64
import time
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from hookrun.config import parse_config
from hookrun.events.runs import (
    ExecutionFinished,
    ExecutionHeartbeat,
    ExecutionStarted,
    LaunchRef,
    LaunchRequest,
    PipelineDefined,
    RunCancelRequested,
    RunStatus,
    TriggerLaunched,
)
from hookrun.runner.context import Context, SourceUnavailable
from hookrun.runner.pipelines import FakePipelineIndex
from hookrun.runner.reconcile import reconcile
from hookrun.runner.specs import execution_spec
from hookrun.runner.state import RunState, RunTable

CONFIG = """
project: {id: p-1, slug: demo, name: Demo}
organization: {id: o-1, slug: acme, title: Acme}
environment: {id: e-1, slug: dev, type: DEVELOPMENT}
steps:
  - name: work
    command: ["work", "--n", "{parameters.n}"]
    parameters: [{name: n, type: integer, default: 1}]
    inputs: [{name: payload}]
  - {name: flaky, command: ["flaky"], retries: 1}
  - {name: authed, command: ["x"], env: {TOKEN: "${env:SECRET_TOKEN}"}}
pipelines:
  - name: chain
    nodes: [{name: a, step: work}, {name: b, step: work}, {name: c, step: work}]
    edges: [{from: a, to: b}, {from: b, to: c}]
triggers:
  - id: one
    title: one
    payload_schema: {type: object, required: [n]}
    actions: [{action: run_execution, step: work, parameters: {n: "{payload.n}"}, payload_input: payload}]
  - {id: flaky, title: f, actions: [{action: run_execution, step: flaky}]}
  - {id: authed, title: a, actions: [{action: run_execution, step: authed}]}
  - {id: chain, title: c, actions: [{action: run_pipeline, pipeline: chain, payload_input: a.payload}]}
  - {id: copy, title: c, actions: [{action: copy_pipeline, source_pipeline_id: "{payload.source}", from_any_trigger: true}]}
  - {id: copy-own, title: c, actions: [{action: copy_pipeline, source_pipeline_id: "{payload.source}"}]}
"""

NOW = datetime(2026, 11, 23, 18, 0, tzinfo=UTC)


@pytest.fixture
def config(tmp_path):
    return parse_config(CONFIG, str(tmp_path / "hookrun.yaml"))


def ctx(config, now=NOW, running=(), index=None, environ=None, elapsed_s=None) -> Context:
    """A context ``now``; this host's monotonic clock has moved as far (or ``elapsed_s``)."""
    moved = (now - NOW).total_seconds() if elapsed_s is None else elapsed_s
    base = time.monotonic()
    return Context(
        config=config,
        runner_id="runner-me",
        now=now,
        environ=environ if environ is not None else {"PATH": "/bin"},
        phase=lambda eid: "running" if eid in running else None,
        lookup_pipeline=(index or FakePipelineIndex()).lookup,
        monotonic=lambda: base + moved,
    )


def launched(trigger: str, body: object, run_id: str = "run-1") -> TriggerLaunched:
    return TriggerLaunched(
        run_id=run_id,
        trigger_id=trigger,
        config_version="v",
        request=LaunchRequest(
            method="POST",
            path="/",
            content_type="application/json",
            body_b64=base64.b64encode(orjson.dumps(body)).decode(),
        ),
    )


def new_run(trigger: str, body: object = None, run_id: str = "run-1", offset: int = 0) -> RunState:
    run = RunState(run_id, partition=0, launch_offset=offset)
    run.apply(launched(trigger, body if body is not None else {}, run_id))
    return run


def types(events) -> list[str]:
    return [type(e).__name__ for e in events]


def start(run: RunState, ex_id: str, runner: str = "runner-other", lease_s: float = 30):
    run.apply(
        ExecutionStarted(
            run_id=run.run_id,
            execution_id=ex_id,
            runner_id=runner,
            occurred_at=NOW,
            lease_until=NOW + timedelta(seconds=lease_s),
        )
    )


def finish(run: RunState, ex_id: str, status=RunStatus.SUCCESS, output=None):
    run.apply(
        ExecutionFinished(
            run_id=run.run_id, execution_id=ex_id, status=status, completed_at=NOW, output=output
        )
    )


class TestStartRun:
    def test_a_launch_creates_an_execution_with_typed_parameters(self, config):
        run = new_run("one", {"n": "5"})
        plan = reconcile(run, ctx(config))
        assert types(plan.events) == ["RunStarted", "ExecutionCreated"]
        assert plan.events[1].params == {"n": 5}
        assert [ex.id for ex in plan.start] == [plan.events[1].execution_id]

    def test_reconciling_again_emits_nothing(self, config):
        run = new_run("one", {"n": 5})
        plan = reconcile(run, ctx(config))
        again = reconcile(run, ctx(config, running={plan.events[1].execution_id}))
        assert again.events == [] and again.start == []

    @pytest.mark.parametrize("body", [{"m": 1}, {"n": "many"}])
    def test_a_bad_payload_is_decided_before_anything_runs(self, config, body):
        plan = reconcile(new_run("one", body), ctx(config))
        assert types(plan.events) == ["RunStarted", "ActionCompleted", "RunFinished"]
        assert plan.events[-1].status is RunStatus.INVALID_PAYLOAD
        assert plan.start == []

    def test_an_unset_step_env_is_unresolved_auth(self, config):
        plan = reconcile(new_run("authed"), ctx(config))
        assert plan.events[-1].status is RunStatus.UNRESOLVED_AUTH
        assert "SECRET_TOKEN" in plan.events[-1].error.message

    def test_the_spec_has_argv_payload_input_and_only_inherited_env(self, config, tmp_path):
        run = new_run("one", {"n": 3})
        plan = reconcile(run, ctx(config, environ={"PATH": "/bin", "KAFKA_X": "no"}))
        spec = execution_spec(run, plan.start[0], ctx(config), tmp_path)
        assert not isinstance(spec, str)
        assert spec.argv == ["work", "--n", "3"]
        assert spec.inputs == {"payload": b'{"n":3}'}
        assert spec.env == {"PATH": "/bin"}


class TestRunFinish:
    def test_a_successful_execution_completes_the_action_and_the_run(self, config):
        run = new_run("one", {"n": 1})
        created = reconcile(run, ctx(config)).events[1]
        start(run, created.execution_id, runner="runner-me")
        finish(run, created.execution_id, output={"ok": 1})
        plan = reconcile(run, ctx(config))
        assert types(plan.events) == ["ActionCompleted", "RunFinished"]
        done = plan.events[-1]
        assert done.status is RunStatus.SUCCESS
        assert done.output == {created.execution_id: {"ok": 1}}
        assert done.execution_count == 1
        assert plan.events[0].result == {
            "action": "run_execution",
            "execution_step": "work",
            "execution_id": created.execution_id,
        }


class TestLeases:
    def test_a_live_lease_is_left_alone(self, config):
        run = new_run("flaky")
        created = reconcile(run, ctx(config)).events[1]
        start(run, created.execution_id, lease_s=3)
        assert reconcile(run, ctx(config, now=NOW + timedelta(seconds=2))).events == []

    def test_a_heartbeat_extends_the_lease(self, config):
        run = new_run("flaky")
        created = reconcile(run, ctx(config)).events[1]
        start(run, created.execution_id, lease_s=3)
        run.apply(
            ExecutionHeartbeat(
                run_id="run-1",
                execution_id=created.execution_id,
                runner_id="runner-other",
                occurred_at=NOW,
                lease_until=NOW + timedelta(seconds=10),
            )
        )
        assert reconcile(run, ctx(config, now=NOW + timedelta(seconds=5))).events == []

    def test_an_expired_lease_is_retried_when_the_step_allows(self, config):
        run = new_run("flaky")
        created = reconcile(run, ctx(config)).events[1]
        start(run, created.execution_id, lease_s=3)
        plan = reconcile(run, ctx(config, now=NOW + timedelta(seconds=4)))
        assert types(plan.events) == ["ExecutionFinished", "ExecutionCreated"]
        assert plan.events[0].status is RunStatus.ABORTED
        assert plan.events[1].attempt == 2
        retry = plan.events[1].execution_id
        assert [ex.id for ex in plan.start] == [retry]
        # the retry's runner dies too: no retries left, the run is ABORTED
        start(run, retry, lease_s=3)
        plan = reconcile(run, ctx(config, now=NOW + timedelta(seconds=5)))
        assert types(plan.events) == ["ExecutionFinished", "ActionCompleted", "RunFinished"]
        assert plan.events[-1].status is RunStatus.ABORTED
        assert plan.events[-1].execution_count == 2

    def test_a_lease_is_judged_by_elapsed_time_not_by_another_hosts_clock(self, config):
        run = new_run("flaky")
        created = reconcile(run, ctx(config)).events[1]
        # started by a runner whose clock is an hour behind this host's
        behind = NOW - timedelta(hours=1)
        run.apply(
            ExecutionStarted(
                run_id=run.run_id,
                execution_id=created.execution_id,
                runner_id="runner-other",
                occurred_at=behind,
                lease_until=behind + timedelta(seconds=30),
            )
        )
        # one second later here: the lease of 30 s is live, whatever the wall clocks say
        assert reconcile(run, ctx(config, now=NOW, elapsed_s=1)).events == []
        assert reconcile(run, ctx(config, now=NOW, elapsed_s=31)).events != []

    def test_this_runners_own_execution_is_never_reclaimed(self, config):
        run = new_run("flaky")
        created = reconcile(run, ctx(config)).events[1]
        start(run, created.execution_id, runner="runner-me", lease_s=3)
        late = ctx(config, now=NOW + timedelta(minutes=5), running={created.execution_id})
        assert reconcile(run, late).events == []


class TestCancel:
    def test_a_queued_execution_is_canceled_and_a_running_one_is_stopped(self, config):
        run = new_run("one", {"n": 1})
        created = reconcile(run, ctx(config)).events[1]
        run.apply(RunCancelRequested(run_id="run-1"))
        plan = reconcile(run, ctx(config, running={created.execution_id}))
        assert plan.cancel == [created.execution_id] and plan.events == []
        plan = reconcile(run, ctx(config))
        assert types(plan.events) == ["ExecutionFinished", "ActionCompleted", "RunFinished"]
        assert plan.events[-1].status is RunStatus.CANCELED


class TestPipelines:
    def test_nodes_start_in_order_and_a_failure_skips_dependents(self, config):
        run = new_run("chain", {"x": 1})
        plan = reconcile(run, ctx(config))
        assert types(plan.events) == [
            "RunStarted",
            "PipelineCreated",
            "PipelineDefined",
            "ExecutionCreated",
        ]
        a = plan.events[-1]
        assert a.node == "a"
        finish(run, a.execution_id)
        plan = reconcile(run, ctx(config))
        assert [e.node for e in plan.events] == ["b"]
        finish(run, plan.events[0].execution_id, status=RunStatus.FAILURE)
        plan = reconcile(run, ctx(config))
        assert types(plan.events) == [
            "PipelineNodeSkipped",
            "PipelineFinished",
            "ActionCompleted",
            "RunFinished",
        ]
        assert plan.events[-1].status is RunStatus.FAILURE

    def test_a_pipelines_payload_input_stays_in_its_launch_and_reaches_its_node(
        self, config, tmp_path
    ):
        run = new_run("chain", {"x": 1}, offset=7)
        plan = reconcile(run, ctx(config))
        created, defined, a = plan.events[1:4]
        ref = LaunchRef(run_id="run-1", partition=0, offset=7)
        for pipeline in (created, defined):
            assert pipeline.inputs_b64 == {}
            assert pipeline.payload_inputs == {"a": ["payload"]}
            assert pipeline.payload_from == ref
        spec = execution_spec(run, run.executions[a.execution_id], ctx(config), tmp_path)
        assert spec.inputs == {"payload": b'{"x":1}'}

    def test_copy_pipeline_waits_for_the_payload_input_then_copies_it(self, config, tmp_path):
        chain = new_run("chain", {"x": 1}, run_id="run-chain", offset=3)
        source = reconcile(chain, ctx(config)).events[2]
        assert isinstance(source, PipelineDefined)
        index = FakePipelineIndex()
        index.remember(source)
        run = new_run("copy", {"source": source.pipeline_id})
        # the source's payload input is read from its launch first: nothing happens meanwhile
        assert reconcile(run, ctx(config, index=index)).events == []
        assert run.started is None
        assert index.wanted == [LaunchRef(run_id="run-chain", partition=0, offset=3)]
        index.remember_launch(chain.launched, 0, 3)
        plan = reconcile(run, ctx(config, index=index))
        copy, defined, a = plan.events[1:4]
        assert copy.source_pipeline_id == source.pipeline_id
        assert copy.parameters == source.parameters
        body = chain.launched.request.body_b64
        # the copy's run holds it inline; its definition refers to the original launch
        assert copy.inputs_b64 == {"a": {"payload": body}}
        assert defined.inputs_b64 == {} and defined.payload_from == source.payload_from
        spec = execution_spec(run, run.executions[a.execution_id], ctx(config), tmp_path)
        assert spec.inputs == {"payload": b'{"x":1}'}
        # a copy of the copy still refers to the first launch
        index.remember(defined)
        again = new_run("copy", {"source": defined.pipeline_id}, run_id="run-3")
        copy2 = reconcile(again, ctx(config, index=index)).events[1]
        assert copy2.inputs_b64 == {"a": {"payload": body}}
        assert copy2.payload_from == source.payload_from

    def test_copy_pipeline_of_an_unknown_or_unreadable_source_fails_the_action(self, config):
        index = FakePipelineIndex()
        plan = reconcile(new_run("copy", {"source": "nope"}), ctx(config, index=index))
        assert types(plan.events) == ["RunStarted", "ActionCompleted", "RunFinished"]
        assert plan.events[-1].status is RunStatus.FAILURE
        source = reconcile(new_run("chain", {"x": 1}), ctx(config)).events[2]
        index.remember(source)

        def unreadable(pipeline_id: str, *, with_payload: bool = True):
            if with_payload:
                raise SourceUnavailable("the payload input of run run-1 cannot be read: gone")
            return index.lookup(pipeline_id, with_payload=False)

        context = ctx(config, index=index)
        context.lookup_pipeline = unreadable
        plan = reconcile(new_run("copy", {"source": source.pipeline_id}, run_id="r2"), context)
        assert types(plan.events) == ["RunStarted", "ActionCompleted", "RunFinished"]
        assert plan.events[1].error == "the payload input of run run-1 cannot be read: gone"

    def test_copy_pipeline_copies_only_its_own_triggers_pipelines_by_default(self, config):
        source = reconcile(new_run("chain", {"x": 1}), ctx(config)).events[2]
        assert isinstance(source, PipelineDefined) and source.trigger_id == "chain"
        index = FakePipelineIndex()
        index.remember(source)
        # another trigger names the chain's pipeline: refused, without reading its payload
        plan = reconcile(
            new_run("copy-own", {"source": source.pipeline_id}), ctx(config, index=index)
        )
        assert types(plan.events) == ["RunStarted", "ActionCompleted", "RunFinished"]
        assert "was not created by trigger 'copy-own'" in plan.events[1].error
        assert index.wanted == []
        # a pipeline that trigger created itself: copied
        mine = source.model_copy(update={"pipeline_id": "p-own", "trigger_id": "copy-own"})
        index.remember(mine)
        index.remember_launch(launched("chain", {"x": 1}), 0, 0)
        plan = reconcile(new_run("copy-own", {"source": "p-own"}), ctx(config, index=index))
        assert types(plan.events)[:3] == ["RunStarted", "PipelineCreated", "PipelineDefined"]
        assert plan.events[1].source_pipeline_id == "p-own"
        assert plan.events[1].trigger_id == "copy-own"

    def test_a_definition_with_its_payload_inline_is_still_copied(self, config):
        # definitions written before payload inputs were referenced carry them inline
        inline = {"a": {"payload": "eyJ4IjoxfQ=="}}
        old = PipelineDefined(
            pipeline_id="p-old",
            run_id="run-0",
            pipeline_name="chain",
            action_index=0,
            nodes={"a": "work", "b": "work", "c": "work"},
            edges=[("a", "b"), ("b", "c")],
            parameters={"a": {"n": 1}, "b": {"n": 1}, "c": {"n": 1}},
            inputs_b64=inline,
        )
        index = FakePipelineIndex()
        index.remember(old)
        plan = reconcile(new_run("copy", {"source": "p-old"}), ctx(config, index=index))
        assert plan.events[1].inputs_b64 == inline and plan.events[2].inputs_b64 == inline


class TestRunTable:
    def test_a_redelivered_launch_of_a_finished_run_is_ignored(self, config):
        table = RunTable()
        event = launched("one", {"n": 1})
        run = table.apply(event, 0, 5)
        assert run is not None and table.low_watermark(0, 9) == 5
        plan = reconcile(run, ctx(config))
        finish(run, plan.events[1].execution_id)
        reconcile(run, ctx(config))
        table.forget(run.run_id, finished=True)
        assert table.apply(event, 0, 12) is None
        assert table.low_watermark(0, 9) == 9

    def test_events_of_runs_launched_before_the_replay_start_are_ignored(self):
        table = RunTable()
        orphan = ExecutionHeartbeat(run_id="old", execution_id="e", runner_id="r", lease_until=NOW)
        assert table.apply(orphan, 0, 3) is None

    def test_a_run_finished_only_in_memory_holds_the_watermark_until_its_finish_is_read(
        self, config
    ):
        table = RunTable()
        run = table.apply(launched("one", {"n": 1}), 0, 5)
        assert run is not None
        created = reconcile(run, ctx(config)).events[1]
        start(run, created.execution_id)
        finish(run, created.execution_id)
        # the runner emitted RunFinished and applied it, but it is not acknowledged yet
        emitted = reconcile(run, ctx(config)).events
        assert types(emitted) == ["ActionCompleted", "RunFinished"] and run.finished is not None
        # an older event read meanwhile does not end the run: it still holds the watermark
        assert table.apply(created, 0, 7) is run
        assert table.low_watermarks({0: 9}) == {0: 5}
        # its RunFinished read from the log does
        table.apply(emitted[-1], 0, 10)
        assert table.low_watermarks({0: 11}) == {0: 11}
