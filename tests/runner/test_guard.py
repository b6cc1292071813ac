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


def _wait_dead(pids: list[int], timeout_s: float = 20.0) -> list[int]:
    # Generous: the guard first starts a Python of its own, and make test runs the unit tests
    # beside the system tests, so it may wait for a core for seconds.
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


def test_a_process_without_an_environment_holds_the_guard_up_a_second_at_most() -> None:
    # One caught inside its exec reads empty for a moment and is read again; one that really
    # has no environment must not keep the guard from exiting.
    from hookrun.runner.guard import Guard

    bare = subprocess.Popen(["sleep", "60"], env={}, start_new_session=True)
    try:
        guard = Guard()
        time.sleep(0.5)  # the guard's Python is up
        started = time.monotonic()
        guard.close(timeout_s=10)
        assert guard._proc.returncode == 0  # exited by itself, not killed by close()
        assert time.monotonic() - started < 5
        assert bare.poll() is None  # not this runner's
    finally:
        bare.kill()
        bare.wait()


# The same with the execution in a sandbox (as root here: as nobody, inside bwrap): the guard
# kills bwrap's group, and bwrap's --die-with-parent takes the sandbox's processes with it.
SANDBOXED_RUNNER = r"""
import os, subprocess, sys, time
from pathlib import Path
from hookrun.runner.guard import Guard
from hookrun.runner.isolation import build_isolation
data = Path(sys.argv[1])
isolation = build_isolation(user=None, sandbox="auto", data_dir=data, config_dir=None)
base = data / "executions" / "ex-1"
(base / "work").mkdir(parents=True)
if isolation.owner:
    os.chown(base, *isolation.owner)
    os.chown(base / "work", *isolation.owner)
guard = Guard()
env = {"PATH": "/usr/bin:/bin", "HOOKRUN_OUTPUT": f"{base}/output.json", **guard.env}
argv = isolation.command(["sh", "-c", "sleep 60 & sleep 60"], str(base))
proc = subprocess.Popen(argv, cwd=base / "work", env=env, start_new_session=True)
guard.register(proc.pid)
print(proc.pid, flush=True)
time.sleep(60)
"""


def test_a_killed_runners_sandboxed_executions_die_with_it(tmp_path: Path) -> None:
    runner = subprocess.Popen(
        [sys.executable, "-c", SANDBOXED_RUNNER, str(tmp_path)],
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        assert runner.stdout is not None
        int(runner.stdout.readline())
        needle = f"HOOKRUN_OUTPUT={tmp_path}/".encode()
        deadline = time.monotonic() + 5
        while len(pids := _with_environ(needle)) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)  # the shell and its two sleeps (and bwrap's processes)
        assert len(pids) >= 3
        os.killpg(runner.pid, signal.SIGKILL)
        runner.wait()
        assert _wait_dead(pids) == []
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.wait()


def _with_environ(needle: bytes) -> list[int]:
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                if needle in Path(f"/proc/{name}/environ").read_bytes() and _alive(int(name)):
                    found.append(int(name))
            except OSError:
                pass
    return found
