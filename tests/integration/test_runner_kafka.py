"""The runner as real processes against the real broker, running real subprocesses."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from aiokafka.partitioner import DefaultPartitioner

from hookrun.dev.events import RawEvent, read_events
from hookrun.dev.kafka_net import free_port
from hookrun.dev.procs import ServiceProcess
from hookrun.dev.pytest_kafka import new_namespace
from hookrun.events import topics
from hookrun.events.base import Event
from hookrun.events.codec import decode
from hookrun.events.kafka import Publisher, ensure_topics
from hookrun.events.runs import LaunchRequest, RunCancelRequested, TriggerLaunched

STEP = r"""
import json, os, pathlib, sys, time
mode = sys.argv[1]
params = json.load(open(os.environ["HOOKRUN_PARAMETERS"]))
inputs = pathlib.Path(os.environ["HOOKRUN_INPUTS"])
outputs = pathlib.Path(os.environ["HOOKRUN_OUTPUTS"])
def out(doc):
    json.dump(doc, open(os.environ["HOOKRUN_OUTPUT"], "w"))
if mode == "ok":
    out({"params": params, "argv": sys.argv[2:], "cwd": os.getcwd(),
         "inputs": {p.name: p.read_text() for p in inputs.iterdir()},
         "run": os.environ["HOOKRUN_RUN_ID"], "secret": os.environ.get("TOKEN"),
         "leak": os.environ.get("KAFKA_BOOTSTRAP_SERVERS")})
    print("hello from ok")
elif mode == "fail":
    print("boom", file=sys.stderr)
    sys.exit(3)
elif mode == "sleep":
    print("sleeping", flush=True)
    time.sleep(float(sys.argv[2]))
elif mode == "once":
    # First attempt says it is under way and hangs (its runner gets killed); the test then
    # leaves the marker in the (read-only) config dir, and the retry finds it and succeeds.
    if not pathlib.Path(sys.argv[2]).exists():
        pathlib.Path("under-way").write_text("x")
        time.sleep(60)
    out({"attempt": "retry"})
elif mode == "big":
    out("x" * int(sys.argv[2]))
elif mode == "hunt":
    # Look for the runner's secrets (NAME=value) wherever an execution could find them.
    names = tuple(f"{n}=".encode() for n in sys.argv[2:])
    places = {"own environment": b"\0".join(f"{k}={v}".encode() for k, v in os.environ.items())}
    for path in [f"/proc/{os.getppid()}/environ"] + [
        f"/proc/{p}/environ" for p in os.listdir("/proc") if p.isdigit()
    ]:
        try:
            places[path] = open(path, "rb").read()
        except OSError:
            pass
    found = {where: [e.decode() for e in text.split(b"\0") if e.startswith(names)]
             for where, text in places.items()}
    out({"uid": os.getuid(), "read": sorted(places), "found": {k: v for k, v in found.items() if v}})
elif mode == "node":
    name = sys.argv[2]
    text = "".join(p.read_text() for p in sorted(inputs.iterdir()))
    (outputs / f"{name}.txt").write_text(text + name + ";")
    out({"seen": sorted(p.name for p in inputs.iterdir()), "text": text + name + ";"})
"""

CONFIG = """
project: {id: p-1, slug: demo, name: Demo}
organization: {id: o-1, slug: acme, title: Acme}
environment: {id: e-1, slug: dev, type: DEVELOPMENT}
steps:
  - name: ok
    command: ["python3", "{config_dir}/step.py", "ok", "--batch", "{parameters.batch_size}"]
    parameters: [{name: batch_size, type: integer, default: 1}]
    inputs: [{name: payload}]
    env: {TOKEN: "${env:HOOKRUN_TEST_TOKEN:-tok}"}
  - {name: fail, command: ["python3", "{config_dir}/step.py", "fail"]}
  - {name: slow, command: ["python3", "{config_dir}/step.py", "sleep", "30"], timeout_s: 1}
  - {name: hold, command: ["python3", "{config_dir}/step.py", "sleep", "60"]}
  - {name: once, command: ["python3", "{config_dir}/step.py", "once", "{config_dir}/marker"], retries: 1}
  - {name: authed, command: ["true"], env: {TOKEN: "${env:HOOKRUN_TEST_MISSING_TOKEN}"}}
  - {name: noop, command: ["true"]}
  - {name: big, command: ["python3", "{config_dir}/step.py", "big", "1000000"]}
  - {name: huge, command: ["python3", "{config_dir}/step.py", "big", "2000000"]}
  - {name: pause, command: ["python3", "{config_dir}/step.py", "sleep", "3"]}
  - {name: node_a, command: ["python3", "{config_dir}/step.py", "node", "a"], inputs: [{name: payload}]}
  - {name: node_b, command: ["python3", "{config_dir}/step.py", "node", "b"]}
  - {name: node_c, command: ["python3", "{config_dir}/step.py", "node", "c"]}
  - name: opts
    command: ["python3", "{config_dir}/step.py", "ok", "{parameters.flag}"]
    parameters: [{name: flag, type: string}]
  - name: opts_pattern
    command: ["python3", "{config_dir}/step.py", "ok", "{parameters.flag}"]
    parameters: [{name: flag, type: string, pattern: "--rm|--init"}]
  - name: hunt
    command: ["python3", "{config_dir}/step.py", "hunt", "HOOKRUN_ADMIN_TOKEN", "HOOKRUN_DATABASE_URL", "HOOKRUN_TEST_TOKEN"]
pipelines:
  - name: chain
    nodes: [{name: a, step: node_a}, {name: b, step: node_b}, {name: c, step: node_c}]
    edges: [{from: a, to: b}, {from: b, to: c}]
  - name: broken
    nodes: [{name: x, step: fail}, {name: y, step: node_b}, {name: z, step: node_c}]
    edges: [{from: x, to: y}, {from: y, to: z}]
triggers:
  - id: ok
    title: ok
    payload_schema: {type: object, required: [batch_size]}
    actions:
      - {action: run_execution, step: ok, parameters: {batch_size: "{payload.batch_size}"}, payload_input: payload}
  - {id: template, title: t, actions: [{action: run_execution, step: ok, parameters: {batch_size: "{payload.missing}"}}]}
  - {id: fail, title: f, actions: [{action: run_execution, step: fail}]}
  - {id: slow, title: s, actions: [{action: run_execution, step: slow}]}
  - {id: hold, title: h, actions: [{action: run_execution, step: hold}]}
  - {id: once, title: o, actions: [{action: run_execution, step: once}]}
  - {id: authed, title: a, actions: [{action: run_execution, step: authed}]}
  - {id: noop, title: n, actions: [{action: run_execution, step: noop}]}
  - {id: huge, title: h, actions: [{action: run_execution, step: huge}]}
  - id: bulky
    title: nine outputs of 1 MB each, more than one Kafka message holds
    actions: [{action: run_execution, step: big}, {action: run_execution, step: big},
              {action: run_execution, step: big}, {action: run_execution, step: big},
              {action: run_execution, step: big}, {action: run_execution, step: big},
              {action: run_execution, step: big}, {action: run_execution, step: big},
              {action: run_execution, step: big}]
  - {id: pause, title: p, actions: [{action: run_execution, step: pause}]}
  - {id: hunt, title: h, actions: [{action: run_execution, step: hunt}]}
  - {id: opts, title: o, actions: [{action: run_execution, step: opts, parameters: {flag: "{payload.flag}"}}]}
  - {id: opts-pattern, title: o, actions: [{action: run_execution, step: opts_pattern, parameters: {flag: "{payload.flag}"}}]}
  - {id: chain, title: c, actions: [{action: run_pipeline, pipeline: chain, payload_input: a.payload}]}
  - {id: broken, title: b, actions: [{action: run_pipeline, pipeline: broken}]}
  - {id: copy, title: c, actions: [{action: copy_pipeline, source_pipeline_id: "{payload.source}", from_any_trigger: true}]}
  - id: multi
    title: m
    actions:
      - {action: run_execution, step: slow}
      - {action: run_execution, step: slow}
      - {action: run_execution, step: noop}
"""

FINISHED = "hookrun.run.finished"
#: The runner's config version: launches name it, as a gateway with the same file would.
VERSION = hashlib.sha256(CONFIG.encode()).hexdigest()[:12]


def events_of(raw: list[RawEvent]) -> list[Event]:
    return [decode(r.value, [(k, v.encode()) for k, v in r.headers.items()]) for r in raw]


class Harness:
    """One namespace: its topics, a publisher, runner processes and event readers."""

    def __init__(self, bootstrap: str, tmp_path: Path) -> None:
        self.bootstrap = bootstrap
        self.ns = new_namespace()
        self.topic = topics.named(topics.RUNS, self.ns)
        self.dir = tmp_path
        # pytest makes it 0700: executions run as nobody (the runner runs as root here) and
        # read {config_dir}/step.py
        tmp_path.chmod(0o755)
        (tmp_path / "step.py").write_text(STEP)
        self.config = tmp_path / "hookrun.yaml"
        self.config.write_text(CONFIG)
        self.procs: list[ServiceProcess] = []
        self.publisher = Publisher(bootstrap, "test", namespace=self.ns)

    async def start(self) -> Harness:
        await ensure_topics(self.bootstrap, namespace=self.ns)
        await self.publisher.start(wait=True)
        return self

    def runner(self, **env: str) -> ServiceProcess:
        port = free_port()
        proc = ServiceProcess(
            f"runner-{port}",
            "hookrun.runner",
            {
                "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
                "HOOKRUN_CONFIG": str(self.config),
                "HOOKRUN_NAMESPACE": self.ns,
                "HOOKRUN_DATA_DIR": str(self.dir / "data"),
                "HOOKRUN_RUNNER_HEALTH_PORT": str(port),
                "HOOKRUN_RUNNER_LEASE_S": "3",
                "HOOKRUN_RUNNER_SESSION_TIMEOUT_MS": "6000",
                **env,
            },
            self.dir,
            health_url=f"http://127.0.0.1:{port}/healthz",
        )
        self.procs.append(proc)
        proc.start()
        proc.wait_healthy(60, ready_key="assigned")
        assert httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).status_code == 200
        return proc

    async def stop(self) -> None:
        for proc in self.procs:
            proc.stop()
        await self.publisher.stop()

    def launched(
        self,
        trigger_id: str,
        body: Any = None,
        run_id: str | None = None,
        config_version: str = VERSION,
    ) -> TriggerLaunched:
        raw = body if isinstance(body, bytes) else orjson.dumps(body if body is not None else {})
        return TriggerLaunched(
            run_id=run_id or str(uuid.uuid4()),
            trigger_id=trigger_id,
            config_version=config_version,
            request=LaunchRequest(
                method="POST",
                path=f"/api/v0/launch/{trigger_id}/",
                content_type="application/json",
                body_b64=base64.b64encode(raw).decode(),
            ),
        )

    async def launch(self, trigger_id: str, body: Any = None, **fields: Any) -> str:
        event = self.launched(trigger_id, body).model_copy(update=fields)
        await self.publisher.publish([event])
        return event.run_id

    async def events(
        self, until: Callable[[list[Event]], bool], timeout_s: float = 30.0
    ) -> list[Event]:
        found = await read_events(
            self.bootstrap,
            self.topic,
            until=lambda raw: until(events_of(raw)),
            timeout_s=timeout_s,
        )
        return events_of(found)

    async def finished(self, run_ids: list[str], timeout_s: float = 40.0) -> dict[str, list[Event]]:
        """Wait until every run has RunFinished; return each run's events."""
        wanted = set(run_ids)

        def done(evs: list[Event]) -> bool:
            return wanted <= {e.run_id for e in evs if e.type == FINISHED}  # type: ignore[attr-defined]

        evs = await self.events(done, timeout_s)
        out: dict[str, list[Event]] = {r: [] for r in run_ids}
        for e in evs:
            rid = getattr(e, "run_id", None)
            if rid in out:
                out[rid].append(e)
        missing = [r for r in run_ids if not any(e.type == FINISHED for e in out[r])]
        assert not missing, (
            f"runs not finished: {missing} {[types(out[r]) for r in missing]}\n"
            + "\n".join(p.tail() for p in self.procs)
        )
        return out


def one(evs: list[Event], type_: str) -> Any:
    found = [e for e in evs if e.type == type_]
    assert len(found) == 1, (type_, [e.type for e in evs])
    return found[0]


def types(evs: list[Event]) -> list[str]:
    return [e.type for e in evs]


@pytest.fixture(scope="module")
async def harness(kafka_bootstrap, tmp_path_factory):
    h = await Harness(kafka_bootstrap, tmp_path_factory.mktemp("runner")).start()
    h.runner()
    yield h
    await h.stop()


@pytest.fixture(scope="module")
async def outcomes(harness):
    """Every outcome launched at once (one runner runs them concurrently)."""
    runs = {
        "ok": await harness.launch("ok", {"batch_size": "7"}),
        "fail": await harness.launch("fail"),
        "identified": await harness.launch(
            "ok",
            {"batch_size": "1"},
            account="alice",
            account_metadata={"iss": "https://idp.example", "roles": ["ci"]},
        ),
        "slow": await harness.launch("slow"),
        "authed": await harness.launch("authed"),
        "schema": await harness.launch("ok", {"size": 1}),
        "template": await harness.launch("template", {"x": 1}),
        "badtype": await harness.launch("ok", {"batch_size": "many"}),
        "option": await harness.launch("opts", {"flag": "--rm"}),
        "admitted": await harness.launch("opts-pattern", {"flag": "--rm"}),
        "chain": await harness.launch("chain", {"seed": 1}),
        "broken": await harness.launch("broken"),
        "multi": await harness.launch("multi"),
    }
    started = time.monotonic()
    found = await harness.finished(list(runs.values()))
    return {name: found[rid] for name, rid in runs.items()}, time.monotonic() - started


def finish(evs: list[Event]) -> Any:
    return one(evs, FINISHED)


async def test_a_successful_execution_gets_typed_parameters_payload_and_environment(outcomes):
    evs = outcomes[0]["ok"]
    run = finish(evs)
    assert run.status == "SUCCESS"
    assert run.execution_count == 1
    created = one(evs, "hookrun.execution.created")
    assert created.params == {"batch_size": 7}
    [output] = run.output.values()
    assert output["params"] == {"batch_size": 7}
    assert output["argv"] == ["--batch", "7"]
    assert output["inputs"] == {"payload": '{"batch_size":"7"}'}
    assert output["run"] == run.run_id
    assert output["secret"] == "tok"
    assert output["leak"] is None  # the runner's own settings stay out of executions
    assert output["cwd"].endswith(f"{created.execution_id}/work")
    finished = one(evs, "hookrun.execution.finished")
    assert finished.stdout_tail == "hello from ok\n"
    assert finished.exit_code == 0
    completed = one(evs, "hookrun.action.completed")
    assert completed.result == {
        "action": "run_execution",
        "execution_step": "ok",
        "execution_id": created.execution_id,
    }
    assert types(evs)[:3] == [
        "hookrun.trigger.launched",
        "hookrun.run.started",
        "hookrun.execution.created",
    ]
    assert types(evs)[-2:] == ["hookrun.action.completed", FINISHED]


async def test_the_sender_a_condition_identified_is_the_finished_runs_account(outcomes):
    run = finish(outcomes[0]["identified"])
    assert run.status == "SUCCESS"
    assert run.account == "alice"
    assert run.account_metadata == {"iss": "https://idp.example", "roles": ["ci"]}


async def test_a_failing_execution_fails_the_run_with_its_details(outcomes):
    run = finish(outcomes[0]["fail"])
    assert run.status == "FAILURE"
    assert run.failed_execution_id == run.executions[0].execution_id
    assert run.executions[0].exit_code == 3
    assert run.error.message == "exit code 3"
    assert "boom" in run.error.stack_trace


async def test_an_execution_over_its_timeout_is_timed_out(outcomes):
    run = finish(outcomes[0]["slow"])
    assert run.status == "TIMED_OUT"
    assert run.executions[0].duration_ms < 5000


async def test_an_unresolvable_step_env_is_unresolved_auth_before_anything_runs(outcomes):
    evs = outcomes[0]["authed"]
    assert finish(evs).status == "UNRESOLVED_AUTH"
    assert "HOOKRUN_TEST_MISSING_TOKEN" in finish(evs).error.message
    assert "hookrun.execution.created" not in types(evs)
    assert one(evs, "hookrun.action.completed").status == "UNRESOLVED_AUTH"


@pytest.mark.parametrize("case", ["schema", "template", "badtype"])
async def test_a_bad_payload_is_invalid_payload_before_anything_runs(outcomes, case):
    evs = outcomes[0][case]
    assert finish(evs).status == "INVALID_PAYLOAD"
    assert "hookrun.execution.created" not in types(evs)


async def test_a_payload_value_like_an_option_is_invalid_payload_unless_a_pattern_admits_it(
    outcomes,
):
    evs = outcomes[0]["option"]
    run = finish(evs)
    assert run.status == "INVALID_PAYLOAD"
    assert run.error.message == (
        "parameter flag: the value from the payload starts with '-' ('--rm'), so a command "
        "could take it for an option (declare a pattern that admits such values)"
    )
    assert "hookrun.execution.created" not in types(evs)
    admitted = finish(outcomes[0]["admitted"])
    assert admitted.status == "SUCCESS", admitted.error
    [output] = admitted.output.values()
    assert output["argv"] == ["--rm"]


async def test_a_three_node_pipeline_passes_output_files_downstream(outcomes):
    evs = outcomes[0]["chain"]
    run = finish(evs)
    assert run.status == "SUCCESS", run.error
    by_node = {s.node: s for s in run.executions}
    assert by_node["a"].output == {"seen": ["payload"], "text": '{"seed":1}a;'}
    assert by_node["b"].output == {"seen": ["a.txt"], "text": '{"seed":1}a;b;'}
    assert by_node["c"].output == {"seen": ["b.txt"], "text": '{"seed":1}a;b;c;'}
    # a node starts only after its parent finished
    assert by_node["b"].started_at >= by_node["a"].completed_at
    created = one(evs, "hookrun.pipeline.created")
    assert one(evs, "hookrun.action.completed").result == {
        "action": "run_pipeline",
        "pipeline_name": "chain",
        "pipeline_id": created.pipeline_id,
    }


async def test_a_failed_node_skips_its_dependents(outcomes):
    evs = outcomes[0]["broken"]
    assert finish(evs).status == "FAILURE"
    skipped = [e.node for e in evs if e.type == "hookrun.pipeline.node_skipped"]
    assert skipped == ["y", "z"]
    assert finish(evs).execution_count == 1


async def test_actions_of_one_trigger_run_concurrently(outcomes):
    evs = outcomes[0]["multi"]
    run = finish(evs)
    assert run.status == "TIMED_OUT"
    assert run.execution_count == 3
    # two 1 s timeouts in parallel (+ 2 s grace at most), not one after the other
    assert run.duration_ms < 2 * 1000 + 2500


async def test_copy_pipeline_reruns_an_earlier_pipelines_definition(harness, outcomes):
    source = one(outcomes[0]["chain"], "hookrun.pipeline.created")
    copied = await harness.launch("copy", {"source": source.pipeline_id})
    unknown = await harness.launch("copy", {"source": "no-such-pipeline"})
    found = await harness.finished([copied, unknown])
    run = finish(found[copied])
    assert run.status == "SUCCESS", run.error
    created = one(found[copied], "hookrun.pipeline.created")
    assert created.source_pipeline_id == source.pipeline_id
    assert created.pipeline_id != source.pipeline_id
    assert (created.nodes, created.edges, created.parameters) == (
        source.nodes,
        source.edges,
        source.parameters,
    )
    assert {s.node: s.output["text"] for s in run.executions}["c"] == '{"seed":1}a;b;c;'
    assert one(found[copied], "hookrun.action.completed").result == {
        "action": "copy_pipeline",
        "source_pipeline_id": source.pipeline_id,
        "pipeline_id": created.pipeline_id,
    }
    failed = finish(found[unknown])
    assert failed.status == "FAILURE"
    assert "no-such-pipeline" in failed.error.message


async def test_cancel_stops_a_running_execution(harness):
    run_id = await harness.launch("hold")
    await harness.events(
        lambda evs: any(e.type == "hookrun.execution.started" and e.run_id == run_id for e in evs)
    )
    await harness.publisher.publish([RunCancelRequested(run_id=run_id, reason="test")])
    found = await harness.finished([run_id], timeout_s=15)
    run = finish(found[run_id])
    assert run.status == "CANCELED"
    assert run.executions[0].status == "CANCELED"
    assert run.duration_ms < 10_000


async def test_a_redelivered_launch_starts_nothing_twice(harness):
    first = harness.launched("noop")
    await harness.publisher.publish([first, first.model_copy(update={"event_id": "again"})])
    await harness.finished([first.run_id])
    # the same launch once more after the run finished, then a marker run on the same
    # partition: when the marker finished, the runner has handled the redelivery too
    parts = sorted(harness.publisher._producer._metadata.partitions_for_topic(harness.topic))
    target = DefaultPartitioner()(first.run_id.encode(), parts, parts)
    marker = harness.launched("noop")
    while DefaultPartitioner()(marker.run_id.encode(), parts, parts) != target:
        marker = harness.launched("noop")
    await harness.publisher.publish([first])
    await harness.publisher.publish([marker])
    found = await harness.finished([first.run_id, marker.run_id])
    evs = found[first.run_id]
    assert types(evs).count("hookrun.run.started") == 1
    assert types(evs).count("hookrun.execution.started") == 1
    assert types(evs).count(FINISHED) == 1


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead for our purposes
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[1].split()[0] != "Z"
    except OSError:
        return False


def _processes_with(*variables: str) -> list[int]:
    """Processes whose environment holds one of ``variables`` (NAME=value)."""
    wanted = [v.encode() for v in variables]
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                env = Path(f"/proc/{name}/environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if any(v in env for v in wanted):
                found.append(int(name))
    return found


async def test_a_killed_runners_executions_are_aborted_or_retried_by_the_next_one(
    kafka_bootstrap, tmp_path
):
    h = await Harness(kafka_bootstrap, tmp_path).start()
    try:
        a = h.runner()
        hold = await h.launch("hold")
        once = await h.launch("once")

        def both_started(evs: list[Event]) -> bool:
            started = {e.run_id for e in evs if e.type == "hookrun.execution.started"}
            return {hold, once} <= started

        evs = await h.events(both_started)
        pids = [e.pid for e in evs if e.type == "hookrun.execution.started"]
        # kill only once the first attempt is under way; the marker lets the retry succeed
        deadline = time.monotonic() + 10
        while not list(tmp_path.glob("data/executions/*/work/under-way")):
            assert time.monotonic() < deadline, a.tail()
            await asyncio.sleep(0.05)
        (tmp_path / "marker").write_text("x")
        # the steps themselves (in a sandbox: not the processes ExecutionStarted names)
        steps = _processes_with(f"HOOKRUN_RUN_ID={hold}", f"HOOKRUN_RUN_ID={once}")
        assert steps
        a.kill()
        # the executions died with their runner (the execution guard)
        deadline = time.monotonic() + 5
        while any(_alive(p) for p in pids + steps) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert not any(_alive(p) for p in pids + steps)
        killed_at = time.monotonic()
        h.runner()
        found = await h.finished([hold, once], timeout_s=40)
        took = time.monotonic() - killed_at
        aborted = finish(found[hold])
        assert aborted.status == "ABORTED"
        assert aborted.executions[0].error.message == "runner lost"
        retried = finish(found[once])
        assert retried.status == "SUCCESS", retried.error
        assert [s.status for s in retried.executions] == ["ABORTED", "SUCCESS"]
        assert retried.output is not None
        # session timeout (6 s) + lease (3 s) + slack
        assert took < 20
    finally:
        await h.stop()


def _health(proc: ServiceProcess) -> dict[str, Any]:
    assert proc.health_url
    return httpx.get(proc.health_url, timeout=2).json()


async def test_two_runners_split_the_partitions_and_run_every_run_once(kafka_bootstrap, tmp_path):
    h = await Harness(kafka_bootstrap, tmp_path).start()
    try:
        a, b = h.runner(), h.runner()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            ha, hb = _health(a), _health(b)
            if ha["assigned"] and hb["assigned"] and len(ha["partitions"] + hb["partitions"]) == 6:
                break
            await asyncio.sleep(0.1)
        assert not set(ha["partitions"]) & set(hb["partitions"])
        run_ids = [await h.launch("noop") for _ in range(24)]
        found = await h.finished(run_ids)
        runners = set()
        for evs in found.values():
            started = [e for e in evs if e.type == "hookrun.execution.started"]
            assert len(started) == 1
            assert finish(evs).status == "SUCCESS"
            runners.add(started[0].runner_id)
        assert len(runners) == 2
    finally:
        await h.stop()


async def test_a_broker_outage_delays_the_runs_under_way_and_aborts_none(spare_kafka, tmp_path):
    """Executions that finish while the broker is away report once it is back: nothing aborted."""
    h = await Harness(spare_kafka.bootstrap, tmp_path).start()
    try:
        runner = h.runner(HOOKRUN_RUNNER_LEASE_S="60")
        run_ids = [await h.launch("pause") for _ in range(3)]

        def all_started(evs: list[Event]) -> bool:
            started = {e.run_id for e in evs if e.type == "hookrun.execution.started"}
            return set(run_ids) <= started

        await h.events(all_started)
        assert spare_kafka.stop()
        # The 3 s executions finish while the broker is away, longer than a send's timeout
        # (10 s): their reports are sent again until it is back.
        await asyncio.sleep(12)
        spare_kafka.start()
        found = await h.finished(run_ids, timeout_s=60)
        for run_id, evs in found.items():
            finished = [e for e in evs if e.type == FINISHED]
            # a report sent again after a timeout may be appended twice: same event, same id
            assert {e.event_id for e in finished} == {finished[0].event_id}, run_id
            assert finished[0].status == "SUCCESS", finished[0]
            statuses = {e.status for e in evs if e.type == "hookrun.execution.finished"}
            assert statuses == {"SUCCESS"}, (run_id, types(evs))
        assert runner.proc is not None and runner.proc.poll() is None
        assert "restarting the runner session" not in runner.tail(400)
    finally:
        await h.stop()


async def test_launches_beyond_the_backlog_wait_on_kafka_and_all_run(kafka_bootstrap, tmp_path):
    h = await Harness(kafka_bootstrap, tmp_path).start()
    try:
        runner = h.runner(HOOKRUN_RUNNER_CONCURRENCY="1", HOOKRUN_RUNNER_MAX_BACKLOG="2")
        run_ids = [await h.launch("pause") for _ in range(7)]
        # One 3 s execution at a time: the runner holds a few runs (one running, two queued, one
        # reporting), the rest wait on Kafka.
        seen = []
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            health = _health(runner)
            seen.append((health["runs"], health["backlog"], health["paused"]))
            await asyncio.sleep(0.1)
        assert max(runs for runs, _, _ in seen) <= 4, seen
        assert max(backlog for _, backlog, _ in seen) <= 3, seen
        assert any(paused for _, _, paused in seen), seen
        found = await h.finished(run_ids, timeout_s=90)
        assert all(finish(evs).status == "SUCCESS" for evs in found.values())
    finally:
        await h.stop()


async def test_runs_whose_events_cannot_be_recorded_fail_and_wedge_nothing_after_a_restart(
    kafka_bootstrap, tmp_path
):
    h = await Harness(kafka_bootstrap, tmp_path).start()
    try:
        first = h.runner()
        # A body nested past what any serialiser writes (an older gateway let it through),
        # an output over HOOKRUN_MAX_OUTPUT_BYTES, and outputs that add up past a message.
        deep = await h.launch("noop", b"[" * 300 + b"]" * 300)
        huge = await h.launch("huge")
        bulky = await h.launch("bulky")
        found = await h.finished([deep, huge, bulky], timeout_s=60)
        for run_id in (deep, bulky):
            outcome = finish(found[run_id])
            assert outcome.status == "FAILURE"
            assert outcome.error.name == "UnrecordableEvent"
            assert "cannot be recorded" in outcome.error.message
            assert outcome.invocation.payload is None
        assert [s.status for s in finish(found[bulky]).executions] == ["SUCCESS"] * 9
        too_large = finish(found[huge])
        assert too_large.status == "FAILURE"
        assert "over HOOKRUN_MAX_OUTPUT_BYTES" in too_large.error.message
        # a runner that replays the same partitions goes on finishing runs
        first.kill()
        h.runner()
        after = await h.launch("noop", {"x": 1})
        found = await h.finished([deep, huge, bulky, after], timeout_s=60)
        assert finish(found[after]).status == "SUCCESS"
        for run_id in (deep, huge, bulky):
            one(found[run_id], FINISHED)
    finally:
        await h.stop()


async def test_an_execution_finds_none_of_the_runners_secrets(kafka_bootstrap, tmp_path):
    """A step hunts the runner's secrets in /proc/$PPID/environ, every /proc/*/environ it can
    read and its own environment: it finds none, and it does not run as root (tests run as
    root here, so by default it runs as nobody in a bubblewrap sandbox)."""
    secrets = {
        "HOOKRUN_ADMIN_TOKEN": f"admin-{uuid.uuid4().hex}",
        "HOOKRUN_DATABASE_URL": f"postgresql://hookrun:{uuid.uuid4().hex}@db/hookrun",
        # what the `ok` step's `${env:HOOKRUN_TEST_TOKEN}` resolves to
        "HOOKRUN_TEST_TOKEN": f"tok-{uuid.uuid4().hex}",
    }
    h = await Harness(kafka_bootstrap, tmp_path).start()
    try:
        h.runner(**secrets)
        run_id = await h.launch("hunt")
        run = finish((await h.finished([run_id]))[run_id])
        assert run.status == "SUCCESS", run.error
        [hunted] = run.output.values()
        assert hunted["found"] == {}
        assert not any(value in orjson.dumps(hunted).decode() for value in secrets.values())
        assert hunted["uid"] != 0
        assert "own environment" in hunted["read"]
    finally:
        await h.stop()


async def test_a_copy_of_an_old_definition_reads_its_payload_input_from_the_launch(
    kafka_bootstrap, tmp_path
):
    """No definition on the compacted pipelines topic holds a payload body; a runner that never
    saw the source's launch copies the pipeline with its original payload input."""
    h = await Harness(kafka_bootstrap, tmp_path).start()
    try:
        first = h.runner()
        body = {"blob": "seed-" + "z" * 100_000}
        chain = await h.launch("chain", body)
        source = one((await h.finished([chain]))[chain], "hookrun.pipeline.created")
        first.stop()
        definitions = await read_events(
            h.bootstrap,
            topics.named(topics.PIPELINES, h.ns),
            until=lambda raw: any(r.key == source.pipeline_id for r in raw),
        )
        assert definitions and all(len(r.value) < 5_000 for r in definitions)
        assert source.payload_from is not None and source.inputs_b64 == {}
        h.runner()
        copied = await h.launch("copy", {"source": source.pipeline_id})
        found = await h.finished([copied])
        run = finish(found[copied])
        assert run.status == "SUCCESS", run.error
        texts = {s.node: s.output["text"] for s in run.executions}
        assert texts["c"] == orjson.dumps(body).decode() + "a;b;c;"
        assert one(found[copied], "hookrun.pipeline.created").source_pipeline_id == (
            source.pipeline_id
        )
    finally:
        await h.stop()
