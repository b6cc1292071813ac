"""A payload value never becomes an option of a step's command (the runner's start of a run)."""

from __future__ import annotations

import pytest

from hookrun.config import parse_config
from hookrun.events.runs import RunStatus
from hookrun.runner.reconcile import reconcile
from hookrun.runner.specs import execution_spec
from tests.runner.test_handlers import ctx, new_run, types

CONFIG = """
project: {id: p-1, slug: demo, name: Demo}
organization: {id: o-1, slug: acme, title: Acme}
environment: {id: e-1, slug: dev, type: DEVELOPMENT}
steps:
  - name: deploy
    command: ["deploy", "{parameters.target}"]
    parameters: [{name: target, type: string}]
  - name: docker
    command: ["docker", "run", "{parameters.flag}", "image"]
    parameters: [{name: flag, type: string, pattern: "--rm|--init"}]
pipelines:
  - name: chain
    nodes: [{name: a, step: deploy}, {name: b, step: deploy, parameters: {target: "-literal"}}]
    edges: [{from: a, to: b}]
triggers:
  - {id: deploy, title: d, actions: [{action: run_execution, step: deploy, parameters: {target: "{payload.target}"}}]}
  - {id: docker, title: d, actions: [{action: run_execution, step: docker, parameters: {flag: "{payload.flag}"}}]}
  - {id: chain, title: c, actions: [{action: run_pipeline, pipeline: chain, parameters: {a: {target: "{payload.target}"}}}]}
"""


@pytest.fixture
def config(tmp_path):
    return parse_config(CONFIG, str(tmp_path / "hookrun.yaml"))


@pytest.mark.parametrize("value", ["--rm", "-rf", "a\nb", "\x1b[2J"])
def test_an_option_like_payload_value_ends_the_run_invalid_payload(config, value):
    plan = reconcile(new_run("deploy", {"target": value}), ctx(config))
    assert types(plan.events) == ["RunStarted", "ActionCompleted", "RunFinished"]
    finished = plan.events[-1]
    assert finished.status is RunStatus.INVALID_PAYLOAD
    assert finished.error.message.startswith("parameter target: the value from the payload ")
    assert repr(value) in finished.error.message
    assert plan.events[1].status is RunStatus.INVALID_PAYLOAD
    assert plan.start == []


def test_a_pipeline_node_filled_from_the_payload_is_checked_too(config):
    plan = reconcile(new_run("chain", {"target": "--rm"}), ctx(config))
    assert plan.events[-1].status is RunStatus.INVALID_PAYLOAD
    assert "starts with '-'" in plan.events[-1].error.message


def test_a_pipeline_nodes_own_literal_value_is_the_configs_choice(config):
    plan = reconcile(new_run("chain", {"target": "prod"}), ctx(config))
    assert types(plan.events)[:2] == ["RunStarted", "PipelineCreated"]
    assert plan.events[1].parameters == {"a": {"target": "prod"}, "b": {"target": "-literal"}}


def test_a_declared_pattern_admits_the_value_into_argv_as_one_item(config, tmp_path):
    run = new_run("docker", {"flag": "--rm"})
    plan = reconcile(run, ctx(config))
    assert types(plan.events) == ["RunStarted", "ExecutionCreated"]
    spec = execution_spec(run, plan.start[0], ctx(config), tmp_path)
    assert not isinstance(spec, str)
    assert spec.argv == ["docker", "run", "--rm", "image"]


def test_a_value_the_pattern_does_not_admit_is_invalid_payload(config):
    plan = reconcile(new_run("docker", {"flag": "--privileged"}), ctx(config))
    assert plan.events[-1].status is RunStatus.INVALID_PAYLOAD
    assert plan.events[-1].error.message == (
        "parameter flag: '--privileged' does not match pattern '--rm|--init'"
    )


def test_an_ordinary_value_runs(config, tmp_path):
    run = new_run("deploy", {"target": "prod-eu"})
    plan = reconcile(run, ctx(config))
    spec = execution_spec(run, plan.start[0], ctx(config), tmp_path)
    assert not isinstance(spec, str)
    assert spec.argv == ["deploy", "prod-eu"]
