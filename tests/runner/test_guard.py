"""The execution guard kills a runner's executions when the runner is killed -9."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

# A stand-in runner: a guard, one registered execution and one only marked in its environment
# (spawned in the instant before registering), then it waits to be killed.
RUNNER = r"""
import os, subprocess, sys, time
from hookrun.runner.guard import Guard
guard = Guard()
env = {**os.environ, **guard.env}
registered = subprocess.Popen(["sleep", "60"], start_new_session=True, env=env)
guard.register(registered.pid)
marked = subprocess.Popen(["sleep", "60"], start_new_session=True, env=env)
print(registered.pid, marked.pid, flush=True)
time.sleep(60)
"""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _wait_dead(pids: list[int], timeout_s: float = 5.0) -> list[int]:
    deadline = time.monotonic() + timeout_s
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    return [p for p in pids if _alive(p)]


def test_a_killed_runners_executions_die_with_it() -> None:
    runner = subprocess.Popen(
        [sys.executable, "-c", RUNNER], stdout=subprocess.PIPE, start_new_session=True
    )
    try:
        assert runner.stdout is not None
        pids = [int(p) for p in runner.stdout.readline().split()]
        assert len(pids) == 2 and all(_alive(p) for p in pids)
        # kill -9 of the runner's whole process group, as `make run` and the chaos test do
        os.killpg(runner.pid, signal.SIGKILL)
        runner.wait()
        assert _wait_dead(pids) == []
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.wait()


def test_a_closed_guard_kills_what_is_still_registered_and_exits() -> None:
    from hookrun.runner.guard import Guard

    guard = Guard()
    proc = subprocess.Popen(["sleep", "60"], start_new_session=True)
    guard.register(proc.pid)
    done = subprocess.Popen(["true"], start_new_session=True)
    done.wait()
    guard.release(done.pid)
    guard.close()
    assert not guard.alive
    assert proc.wait(timeout=5) == -signal.SIGKILL
