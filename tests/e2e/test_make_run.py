"""`make run` itself (python -m hookrun.dev.run): its printed curl works and Ctrl-C leaves nothing."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from hookrun.dev.kafka_net import free_port
from hookrun.dev.pytest_kafka import new_namespace
from tests.e2e.support import REPO, wait_for

pytestmark = pytest.mark.e2e


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # the command name may hold spaces and parentheses: split after the last ')'
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        tree.setdefault(ppid, []).append(int(stat.parent.name))
    return tree


def descendants(pid: int) -> set[int]:
    tree, found, todo = _children(), set(), [pid]
    while todo:
        for child in tree.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"  # a zombie is dead for our purposes


class MakeRun:
    """`python -m hookrun.dev.run` as a child process whose output is collected line by line."""

    def __init__(self, env: dict[str, str]) -> None:
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "hookrun.dev.run"],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # Ctrl-C in a terminal goes to run.py, not to pytest
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def printed_curl(self) -> str:
        """The curl command as printed: its first line and every continuation line."""
        lines = list(self.lines)
        start = next(i for i, line in enumerate(lines) if line.startswith("curl "))
        end = start
        while lines[end].endswith("\\"):
            end += 1
        return "\n".join(lines[start : end + 1])


@pytest.fixture
def make_run(kafka_bootstrap: str, tmp_path: Path) -> Iterator[MakeRun]:
    env = {
        k: v for k, v in os.environ.items() if k not in ("HOOKRUN_CONFIG", "HOOKRUN_DATABASE_URL")
    }
    env.update(
        {
            "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
            "HOOKRUN_PORT": str(free_port()),
            "HOOKRUN_STATUS_PORT": str(free_port()),
            "HOOKRUN_DEMO_RECEIVER_PORT": str(free_port()),
            "HOOKRUN_RUNNER_HEALTH_PORT": str(free_port()),
            "HOOKRUN_NOTIFIER_HEALTH_PORT": str(free_port()),
            # the status DB, the data dir and the logs of this run, not the repository's .hookrun
            "HOOKRUN_STATE_DIR": str(tmp_path / "state"),
            # passed through to every service: its own topics and consumer groups
            "HOOKRUN_NAMESPACE": new_namespace("e2e"),
            "PYTHONUNBUFFERED": "1",
        }
    )
    run = MakeRun(env)
    try:
        yield run
    finally:
        if run.proc.poll() is None:
            left = descendants(run.proc.pid)
            run.proc.kill()
            run.proc.wait(10)
            for pid in left:
                if alive(pid):
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass


def test_make_run_prints_a_working_curl_restarts_a_killed_service_and_ctrl_c_stops_all(
    make_run: MakeRun, tmp_path: Path
) -> None:
    wait_for(
        lambda: make_run.proc.poll() is not None or "Ctrl-C stops everything" in make_run.output,
        150,
        "make run to print its curl",
    )
    assert make_run.proc.poll() is None, make_run.output
    printed = {int(pid) for pid in re.findall(r" pid (\d+) ", make_run.output)}
    assert len(printed) == 5, make_run.output  # status, runner, notifier, receiver, gateway
    children = descendants(make_run.proc.pid)
    assert printed <= children

    # the exact curl it printed, as a user pastes it into a shell
    curl = subprocess.run(
        ["bash", "-c", make_run.printed_curl()], capture_output=True, text=True, timeout=60
    )
    assert curl.returncode == 0, curl.stderr
    match = re.fullmatch(r"Created run ([0-9a-f-]{36})", curl.stdout.strip())
    assert match, curl.stdout
    run_id = match.group(1)

    # the loop closes in make run's own terminal: the demo receiver verified the notification
    wait_for(
        lambda: re.search(
            rf"^receiver +\| run {run_id} SUCCESS in \d+ ms, signature verified",
            make_run.output,
            re.MULTILINE,
        ),
        60,
        f"make run to print run {run_id}\n{make_run.output}",
    )
    receiver_log = tmp_path / "state" / "logs" / "receiver.log"
    assert f'"id": "{run_id}"' in receiver_log.read_text()  # the whole body is in the log

    # a service that dies is restarted, and the next launch runs and is notified
    runner_pid = int(re.search(r"runner +pid (\d+) ", make_run.output).group(1))
    os.killpg(runner_pid, signal.SIGKILL)
    wait_for(
        lambda: "runner    restarted, pid" in make_run.output,
        30,
        f"make run to restart the runner\n{make_run.output}",
    )
    assert "!! runner exited (-9); restarting in 1 s." in make_run.output
    curl = subprocess.run(
        ["bash", "-c", make_run.printed_curl()], capture_output=True, text=True, timeout=60
    )
    again = re.fullmatch(r"Created run ([0-9a-f-]{36})", curl.stdout.strip())
    assert again, curl.stdout + curl.stderr
    wait_for(
        lambda: f"run {again.group(1)} SUCCESS" in receiver_log.read_text(),
        90,
        f"the restarted runner to run {again.group(1)}\n{make_run.output}",
    )

    children |= descendants(make_run.proc.pid)
    make_run.proc.send_signal(signal.SIGINT)
    assert make_run.proc.wait(60) == 0, make_run.output
    make_run._reader.join(10)
    assert "stopped everything started by make run." in make_run.output
    left = sorted(pid for pid in children if alive(pid))
    assert not left, f"still running after Ctrl-C: {left}"
