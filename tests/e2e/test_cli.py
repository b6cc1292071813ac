"""The `hookrun` command against the running system: every command, its --json and its errors."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hookrun.dev.pytest_kafka import new_namespace
from tests.e2e.support import ADMIN_TOKEN, REPO, System, wait_for

pytestmark = pytest.mark.e2e

HOOKRUN = str(Path(sys.executable).with_name("hookrun"))


@pytest.fixture(scope="module")
def system(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    started = System(
        kafka_bootstrap, tmp_path_factory.mktemp("e2e-cli"), namespace=new_namespace("e2e-cli")
    )
    try:
        yield started.start()
    finally:
        started.stop()


def cli_env(system: System, **extra: str) -> dict[str, str]:
    """The services' environment (secrets, broker, store) plus the CLI's own settings."""
    return {
        **os.environ,
        **system.procs[0].env,
        "HOOKRUN_URL": system.base,
        "HOOKRUN_ADMIN_TOKEN": ADMIN_TOKEN,
        "HOOKRUN_CONFIG": str(system.root / "hookrun.yaml"),
        "COLUMNS": "200",
        **extra,
    }


def hookrun(system: System, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [HOOKRUN, *args], env=cli_env(system, **extra), capture_output=True, text=True, timeout=120
    )


def ok_json(system: System, *args: str) -> Any:
    done = hookrun(system, *args, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def sent(system: System, trigger: str, payload: dict[str, Any]) -> str:
    answer = ok_json(system, "send", trigger, "--data", json.dumps(payload))
    assert answer["status_code"] == 202 and answer["ok"] is True, answer
    return str(answer["run_id"])


def finished(system: System, run_id: str, timeout_s: float = 60) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        run: dict[str, Any] = ok_json(system, "runs", "show", run_id)
        return run if run["status"] is not None else None

    return wait_for(check, timeout_s, f"run {run_id} to finish\n{system.logs()}")


@pytest.fixture(scope="module")
def succeeded(system: System) -> str:
    """A run of gh-ok that succeeded, launched with `hookrun send`."""
    run_id = sent(system, "gh-ok", {"n": 3})
    assert finished(system, run_id)["status"] == "SUCCESS"
    return run_id


class TestSend:
    @pytest.mark.parametrize(
        ("trigger", "status"),
        [("gh-ok", "SUCCESS"), ("sw-fail", "FAILURE"), ("token-pipe", "SUCCESS")],
        ids=["hmac", "standard-webhooks", "static-secret"],
    )
    def test_send_signs_as_the_triggers_conditions_require(
        self, system: System, trigger: str, status: str
    ) -> None:
        run_id = sent(system, trigger, {"n": 4, "token": "t"})
        run = finished(system, run_id)
        assert (run["trigger_id"], run["status"]) == (trigger, status)

    def test_send_prints_the_gateways_answer_and_reads_a_file(
        self, system: System, tmp_path: Path
    ) -> None:
        body = tmp_path / "payload.json"
        body.write_text('{"n": 5}')
        done = hookrun(system, "send", "gh-ok", "--data", f"@{body}")
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith("202 Created run ")
        run_id = done.stdout.split()[-1]
        assert finished(system, run_id)["status"] == "SUCCESS"

    def test_a_refused_launch_exits_non_zero_and_points_at_the_log(self, system: System) -> None:
        # wrong secret in the environment: the signature does not match
        done = hookrun(system, "send", "gh-ok", "--data", "{}", HOOKRUN_E2E_GH_SECRET="wrong")
        assert done.returncode == 1
        assert "answered 400" in done.stderr and "hookrun triggers log gh-ok" in done.stderr

    def test_an_unknown_trigger_names_the_config_and_its_triggers(self, system: System) -> None:
        done = hookrun(system, "send", "nope")
        assert done.returncode == 1
        assert "trigger 'nope' is not in" in done.stderr and "gh-ok" in done.stderr

    def test_data_that_is_not_json_is_a_usage_error(self, system: System) -> None:
        done = hookrun(system, "send", "gh-ok", "--data", "{n: 1")
        assert done.returncode == 2 and "--data: not JSON" in done.stderr


class TestRuns:
    def test_list_filters_and_prints_a_table_or_json(self, system: System, succeeded: str) -> None:
        page = ok_json(system, "runs", "list", "--trigger", "gh-ok", "--status", "SUCCESS")
        assert succeeded in [r["run_id"] for r in page["runs"]]
        assert {r["trigger_id"] for r in page["runs"]} == {"gh-ok"}
        page = ok_json(system, "runs", "list", "--since", "1h", "--limit", "1")
        assert len(page["runs"]) == 1 and page["next_cursor"]
        assert ok_json(system, "runs", "list", "--status", "TIMED_OUT")["runs"] == []
        table = hookrun(system, "runs", "list", "--trigger", "gh-ok")
        assert table.returncode == 0
        [line] = [line for line in table.stdout.splitlines() if succeeded in line]
        assert "gh-ok" in line and "SUCCESS" in line

    def test_show_prints_the_run_its_executions_and_deliveries(
        self, system: System, succeeded: str
    ) -> None:
        detail = ok_json(system, "runs", "show", succeeded)
        assert detail["executions"][0]["exit_code"] == 0
        shown = hookrun(system, "runs", "show", succeeded)
        assert shown.returncode == 0
        assert succeeded in shown.stdout and "Executions" in shown.stdout
        assert "SUCCESS" in shown.stdout and " ok " in shown.stdout

    def test_watch_follows_runs_live_until_ctrl_c(self, system: System, succeeded: str) -> None:
        latest = ok_json(system, "runs", "list", "--trigger", "gh-ok", "--limit", "1")["runs"]
        watch = subprocess.Popen(
            [HOOKRUN, "runs", "watch", "--trigger", "gh-ok", "--limit", "1", "--json"],
            env=cli_env(system),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            # as from a terminal: a suite started in the background (`cmd &`) ignores SIGINT,
            # and its children would inherit that
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        try:
            assert watch.stdout is not None
            # the recent run first; the live feed follows from then on
            assert json.loads(watch.stdout.readline())["run_id"] == latest[0]["run_id"]
            run_id = sent(system, "gh-ok", {"n": 6})
            seen: list[dict[str, Any]] = []
            for line in watch.stdout:
                change = json.loads(line)
                seen.append(change)
                if change["run_id"] == run_id and change["status"] == "SUCCESS":
                    break
            assert {c["trigger_id"] for c in seen} == {"gh-ok"}
        finally:
            watch.send_signal(signal.SIGINT)
            code = watch.wait(timeout=30)
        assert code == 0, watch.stderr.read() if watch.stderr else ""

    def test_cancel_stops_a_running_run(self, system: System) -> None:
        run_id = sent(system, "sw-hold", {"x": 1})

        def started() -> bool:
            executions = ok_json(system, "runs", "show", run_id)["executions"]
            return any(x["started_at"] for x in executions)

        wait_for(started, 60, f"run {run_id} to start")
        done = hookrun(system, "runs", "cancel", run_id, "--reason", "e2e")
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == f"cancel requested for run {run_id}"
        assert finished(system, run_id)["status"] == "CANCELED"
        again = hookrun(system, "runs", "cancel", run_id)
        assert (
            again.returncode == 1 and "409" in again.stderr and "already finished" in again.stderr
        )

    def test_replay_prints_the_new_run_and_takes_a_new_payload(
        self, system: System, succeeded: str
    ) -> None:
        done = hookrun(system, "runs", "replay", succeeded, "--data", '{"n": 8}')
        assert done.returncode == 0, done.stderr
        new_id = done.stdout.strip()
        uuid.UUID(new_id)
        run = finished(system, new_id)
        assert run["replay_of"] == succeeded and run["status"] == "SUCCESS"
        assert run["executions"][0]["params"] == {"n": 8}
        answer = ok_json(system, "runs", "replay", succeeded)
        assert answer["replay_of"] == succeeded
        assert ok_json(system, "runs", "show", succeeded)["replays"] == [new_id, answer["run_id"]]

    def test_redeliver_asks_for_the_notification_again(
        self, system: System, succeeded: str
    ) -> None:
        answer = ok_json(system, "runs", "redeliver", succeeded)
        assert answer == {
            "run_id": succeeded,
            "redelivery_requested": True,
            "subscription_id": None,
        }
        wait_for(lambda: len(system.notifications(succeeded)) >= 2, 60, "the second notification")
        done = hookrun(system, "runs", "redeliver", succeeded)
        assert done.stdout.strip() == f"redelivery requested for run {succeeded}"


class TestErrors:
    def test_a_wrong_token_is_one_line_and_exit_1(self, system: System, succeeded: str) -> None:
        for args in (["runs", "list"], ["runs", "show", succeeded], ["events", succeeded]):
            done = hookrun(system, *args, "--token", "wrong")
            assert done.returncode == 1
            assert done.stderr.strip() == (
                f"hookrun: {system.base} refused the admin token (401): check"
                " HOOKRUN_ADMIN_TOKEN or --token"
            )
        done = hookrun(system, "runs", "list", "--json", HOOKRUN_ADMIN_TOKEN="wrong")
        assert done.returncode == 1 and "401" in json.loads(done.stdout)["error"]

    def test_an_unknown_run_is_named(self, system: System) -> None:
        missing = str(uuid.uuid4())
        for args in (["runs", "show"], ["runs", "replay"], ["runs", "cancel"], ["events"]):
            done = hookrun(system, *args, missing)
            assert done.returncode == 1
            assert done.stderr.strip() == f"hookrun: run {missing} not found (404)"

    def test_a_service_that_does_not_answer_names_the_url(self, system: System) -> None:
        from hookrun.dev.kafka_net import free_port

        url = f"http://127.0.0.1:{free_port()}"
        for args in (["runs", "list"], ["send", "gh-ok"], ["runs", "watch"]):
            done = hookrun(system, *args, "--url", url)
            assert done.returncode == 1
            assert f"cannot reach hookrun at {url}" in done.stderr, done.stderr
            assert len(done.stderr.strip().splitlines()) == 1


def test_triggers_log_shows_accepted_and_refused_launches(system: System, succeeded: str) -> None:
    refused = system.http.post(
        "/api/v0/launch/gh-ok/", content=b"{}", headers={"X-Hub-Signature-256": "sha256=00"}
    )
    assert refused.status_code == 400
    page = ok_json(system, "triggers", "log", "gh-ok", "--limit", "500")
    outcomes = {(e["outcome"], e["run_id"]) for e in page["entries"]}
    assert ("accepted", succeeded) in outcomes
    [reason] = {e["reason"] for e in page["entries"] if e["outcome"] == "rejected"}
    assert "signature mismatch" in reason
    table = hookrun(system, "triggers", "log", "gh-ok")
    assert "rejected" in table.stdout and "signature mismatch" in table.stdout


def test_events_prints_the_runs_cloudevents(system: System, succeeded: str) -> None:
    answer = ok_json(system, "events", succeeded)
    types = [e["type"] for e in answer["events"]]
    assert types[0] == "hookrun.trigger.launched" and "hookrun.run.finished" in types
    shown = hookrun(system, "events", succeeded)
    assert shown.returncode == 0
    assert "# hookrun.trigger.launched" in shown.stdout
    assert '"body (decoded)": "{\\"n\\": 3}"' in shown.stdout
    # the same records read straight from Kafka (as for a dead-letter topic)
    stored = ok_json(system, "events", succeeded, "--topic", f"{system.namespace}.runs")
    assert [e["type"] for e in stored["events"]][: len(types)] == types


class TestConfigCheck:
    def test_a_valid_file_passes(self, system: System) -> None:
        answer = ok_json(system, "config", "check")
        assert answer["ok"] is True and "gh-ok" in answer["triggers"]
        done = hookrun(system, "config", "check", str(REPO / "examples/hookrun.yaml"))
        assert done.returncode == 0 and "valid" in done.stdout

    def test_a_problem_gets_the_services_message_and_exit_1(
        self, system: System, tmp_path: Path
    ) -> None:
        bad = tmp_path / "bad.yaml"
        text = (system.root / "hookrun.yaml").read_text()
        bad.write_text(
            text.replace("type: static_secret, header: X-Token, ", "type: static_secret, ")
        )
        done = hookrun(system, "config", "check", str(bad))
        assert done.returncode == 1
        # the gateway refuses the same file at start with the same lines
        gateway = subprocess.run(
            [sys.executable, "-m", "hookrun.gateway"],
            env=cli_env(system, HOOKRUN_CONFIG=str(bad), HOOKRUN_PORT="1"),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert gateway.returncode != 0
        problems = done.stderr.splitlines()[1:]
        assert problems and all(line.startswith(f"{bad}: triggers[") for line in problems)
        assert gateway.stderr.strip().endswith("\n".join(problems))
        answer = json.loads(hookrun(system, "config", "check", str(bad), "--json").stdout)
        assert answer["ok"] is False and answer["problems"][0]["path"].startswith("triggers[")


def test_topics_check_and_create(system: System) -> None:
    answer = ok_json(system, "topics", "check", "--namespace", system.namespace)
    assert answer["problems"] == [] and answer["ok"] is True
    fresh = new_namespace("e2e-cli-topics")
    missing = hookrun(system, "topics", "check", "--namespace", fresh, "--json")
    assert missing.returncode == 1 and json.loads(missing.stdout)["problems"]
    created = ok_json(system, "topics", "create", "--namespace", fresh)
    assert created["created"] and all(n.startswith(f"{fresh}.") for n in created["created"])
    assert created["problems"] == []


def test_rebuild_replays_the_topics_into_the_store(system: System, succeeded: str) -> None:
    status = system.procs[0]
    status.stop()  # a SQLite store is rebuilt while its service is stopped
    try:
        done = hookrun(system, "rebuild", "--json")
        assert done.returncode == 0, done.stderr
        answer = json.loads(done.stdout)
        assert answer["records"] > 0 and answer["events_per_s"] > 0
        shown = hookrun(system, "rebuild")
        assert shown.returncode == 0 and "events/s" in shown.stdout
    finally:
        status.start(wait_s=120)
    assert ok_json(system, "runs", "show", succeeded)["status"] == "SUCCESS"


def test_send_launches_the_example_config_of_make_run(kafka_bootstrap: str, tmp_path: Path) -> None:
    """`hookrun send feature-extraction`, no --data, as the README's walkthrough types it."""
    examples = REPO / "examples"
    # The example's steps beside its copy: the sandbox shows executions the config's folder,
    # and a checkout under /tmp (as CI makes one) is hidden behind their private /tmp.
    shutil.copytree(examples / "steps", tmp_path / "steps")
    text = (examples / "hookrun.yaml").read_text()
    system = System(
        kafka_bootstrap,
        tmp_path,
        config=lambda receiver: text,
        namespace=new_namespace("e2e-cli-example"),
    ).start()
    try:
        # the CLI reads the example config itself, from the working directory as make run does
        done = subprocess.run(
            [HOOKRUN, "send", "feature-extraction", "--json"],
            env=cli_env(system, HOOKRUN_CONFIG="examples/hookrun.yaml"),
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        run_id = json.loads(done.stdout)["run_id"]
        run = finished(system, run_id)
        assert run["status"] == "SUCCESS", run
        assert run["executions"][0]["params"] == {"batch_size": 64}
    finally:
        system.stop()
