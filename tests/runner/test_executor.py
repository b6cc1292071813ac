"""ProcessExecutor: real processes, slots, held starts, the quick report, timeouts and cancels."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from hookrun.dev.pytest_kafka import missing_part
from hookrun.events.base import Event
from hookrun.events.runs import ExecutionFinished, ExecutionStarted, RunStatus
from hookrun.runner.isolation import Isolation, build_isolation
from hookrun.runner.processes import ProcessExecutor
from hookrun.runner.specs import ExecutionSpec


def _spec(n: int, argv: list[str], *, timeout_s: float = 30.0) -> ExecutionSpec:
    return ExecutionSpec(
        run_id=f"run-{n}",
        execution_id=f"ex-{n}",
        trigger_id="t",
        step="s",
        argv=argv,
        env={"PATH": "/usr/bin:/bin"},
        params={"n": n},
        inputs={"payload": b"{}"},
        input_dirs=[],
        timeout_s=timeout_s,
        partition=0,
    )


class Reports:
    def __init__(self) -> None:
        self.emits: list[list[Event]] = []

    async def __call__(self, events: list[Event]) -> None:
        self.emits.append(list(events))

    def finished(self) -> dict[str, ExecutionFinished]:
        return {
            e.execution_id: e
            for batch in self.emits
            for e in batch
            if isinstance(e, ExecutionFinished)
        }

    async def wait(self, count: int, timeout_s: float = 10.0) -> dict[str, ExecutionFinished]:
        deadline = time.monotonic() + timeout_s
        while len(self.finished()) < count:
            assert time.monotonic() < deadline, f"{len(self.finished())} of {count} finished"
            await asyncio.sleep(0.01)
        return self.finished()


@pytest.fixture(params=["plain", "isolated"])
def isolation(request: pytest.FixtureRequest, tmp_path: Path) -> Isolation:
    """Every test runs as the runner ran before isolation, and as it runs by default here (as
    root: as nobody in a bubblewrap sandbox, when the machine has bwrap)."""
    if request.param == "plain":
        return Isolation()
    return build_isolation(user=None, sandbox="auto", data_dir=tmp_path, config_dir=None)


@pytest.fixture
def executor_for(isolation: Isolation):
    def make(tmp_path: Path, reports: Reports, **kw: object) -> ProcessExecutor:
        return ProcessExecutor(
            tmp_path,
            lease_s=30,
            runner_id="runner-test",
            emit=reports,
            isolation=isolation,
            **{"concurrency": 2, **kw},
        )

    return make


def _workdir(tmp_path: Path, n: int) -> Path:
    return tmp_path / "executions" / f"ex-{n}" / "work"


@pytest.mark.parametrize("spawners", [0, 4], ids=["on-the-loop", "spawner-threads"])
async def test_no_more_processes_run_at_once_than_slots_and_all_run(
    tmp_path: Path, executor_for, spawners: int
) -> None:
    reports = Reports()
    executor = executor_for(tmp_path, reports, concurrency=2, spawners=spawners)
    peak = 0

    async def watch() -> None:
        nonlocal peak
        while True:
            peak = max(peak, executor.running())
            await asyncio.sleep(0.005)

    watcher = asyncio.create_task(watch())
    t0 = time.monotonic()
    for n in range(6):
        executor.submit(_spec(n, ["sleep", "0.2"]))
    assert executor.backlog() == 4
    finished = await reports.wait(6)
    watcher.cancel()
    await executor.stop()
    assert all(f.status is RunStatus.SUCCESS for f in finished.values())
    assert peak == 2
    assert time.monotonic() - t0 >= 0.55  # three rounds of two


async def test_a_held_execution_starts_only_once_released(tmp_path: Path, executor_for) -> None:
    reports = Reports()
    executor = executor_for(tmp_path, reports)
    marker = _workdir(tmp_path, 1) / "ran"
    executor.submit(_spec(1, ["touch", "ran"]), held=True)
    executor.submit(_spec(2, ["touch", "never"]), held=True)
    # Prepared while held (the runner does it while ExecutionCreated is in flight), not run.
    assert (tmp_path / "executions" / "ex-1" / "parameters.json").read_bytes() == b'{"n":1}'
    await asyncio.sleep(0.2)
    assert not marker.exists() and reports.emits == []
    assert executor.phase("ex-1") == "queued"
    executor.discard("ex-2")
    executor.release("ex-1")
    finished = await reports.wait(1)
    await asyncio.sleep(0.1)
    await executor.stop()
    assert marker.exists() and not (_workdir(tmp_path, 2) / "never").exists()
    assert set(finished) == {"ex-1"} and executor.phase("ex-2") is None


async def test_a_quick_process_is_reported_in_one_append_a_slow_one_announces_itself(
    tmp_path: Path,
    executor_for,
) -> None:
    reports = Reports()
    executor = executor_for(tmp_path, reports, quick_s=0.05)
    executor.submit(_spec(1, ["true"]))
    await reports.wait(1)
    executor.submit(_spec(2, ["sleep", "0.3"]))
    await reports.wait(2)
    await executor.stop()
    quick = [b for b in reports.emits if any(e.execution_id == "ex-1" for e in b)]  # type: ignore[attr-defined]
    assert [[type(e) for e in b] for b in quick] == [[ExecutionStarted, ExecutionFinished]]
    slow = [b for b in reports.emits if any(e.execution_id == "ex-2" for e in b)]  # type: ignore[attr-defined]
    assert [[type(e) for e in b] for b in slow] == [[ExecutionStarted], [ExecutionFinished]]
    started = slow[0][0]
    assert isinstance(started, ExecutionStarted) and started.runner_id == "runner-test"


async def test_exit_code_tails_timeout_and_cancel(tmp_path: Path, executor_for) -> None:
    reports = Reports()
    executor = executor_for(tmp_path, reports, concurrency=4)
    executor.submit(_spec(1, ["sh", "-c", "echo out; echo err >&2; exit 3"]))
    executor.submit(_spec(2, ["sleep", "30"], timeout_s=0.3))
    executor.submit(_spec(3, ["sleep", "30"]))
    await asyncio.sleep(0.2)
    executor.cancel("ex-3")
    finished = await reports.wait(3)
    await executor.stop()
    failed = finished["ex-1"]
    assert (failed.status, failed.exit_code, failed.error) == (RunStatus.FAILURE, 3, "exit code 3")
    assert (failed.stdout_tail, failed.stderr_tail) == ("out\n", "err\n")
    assert finished["ex-2"].status is RunStatus.TIMED_OUT
    assert finished["ex-3"].status is RunStatus.CANCELED


async def test_a_queued_execution_canceled_is_reported_without_running(
    tmp_path: Path, executor_for
) -> None:
    reports = Reports()
    executor = executor_for(tmp_path, reports, concurrency=1)
    executor.submit(_spec(1, ["sleep", "0.3"]))
    executor.submit(_spec(2, ["touch", "never"]))
    executor.cancel("ex-2")
    finished = await reports.wait(2)
    await executor.stop()
    assert finished["ex-2"].status is RunStatus.CANCELED
    assert finished["ex-2"].error == "run canceled before it started"
    assert not (_workdir(tmp_path, 2) / "never").exists()


async def test_stop_kills_running_processes_without_reporting_them(
    tmp_path: Path, executor_for
) -> None:
    reports = Reports()
    executor = executor_for(tmp_path, reports)
    started = _workdir(tmp_path, 1) / "started"
    executor.submit(_spec(1, ["sh", "-c", "touch started; exec sleep 30"]))
    deadline = time.monotonic() + 5
    while not started.exists():
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    # In a sandbox the shell's $$ is its pid in its own namespace: find it by its environment.
    pids = _processes_of(tmp_path)
    assert pids
    await executor.stop()
    assert all(not Path(f"/proc/{pid}").exists() or _zombie(pid) for pid in pids)
    assert reports.finished() == {}


def _processes_of(tmp_path: Path) -> list[int]:
    """Processes whose environment names an execution directory under ``tmp_path``."""
    needle = f"HOOKRUN_OUTPUT={tmp_path}/executions/".encode()
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                if needle in Path(f"/proc/{name}/environ").read_bytes():
                    found.append(int(name))
            except OSError:
                pass
    return found


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


@pytest.mark.parametrize("argv", [["/nonexistent/binary"]])
async def test_a_command_that_cannot_start_fails(
    tmp_path: Path, executor_for, argv: list[str]
) -> None:
    reports = Reports()
    executor = executor_for(tmp_path, reports)
    executor.submit(_spec(1, argv))
    finished = await reports.wait(1)
    await executor.stop()
    assert finished["ex-1"].status is RunStatus.FAILURE
    assert finished["ex-1"].error is not None and finished["ex-1"].error.startswith("cannot start")
    assert executor.running() == 0


def test_a_file_is_written_whole_when_a_write_takes_less_than_it_was_given(tmp_path, monkeypatch):
    import os

    from hookrun.runner.workdirs import _write_file

    real = os.write
    monkeypatch.setattr(os, "write", lambda fd, data: real(fd, bytes(data[:3])))
    _write_file(str(tmp_path / "inputs.json"), b"0123456789")
    monkeypatch.undo()
    assert (tmp_path / "inputs.json").read_bytes() == b"0123456789"


_WRITE_OUTPUT = 'import os, sys; open(os.environ["HOOKRUN_OUTPUT"], "w").write(sys.argv[1])'


@pytest.mark.parametrize(
    ("written", "error"),
    [
        ('{"records": 8}', None),
        ("x" * 2048, "over HOOKRUN_MAX_OUTPUT_BYTES (1024)"),
        ("{not json", "HOOKRUN_OUTPUT is not JSON"),
        ("[" * 10 + "]" * 10, "nests deeper than HOOKRUN_MAX_JSON_DEPTH (8)"),
    ],
    ids=["kept", "too-large", "not-json", "too-deep"],
)
async def test_an_output_no_event_could_carry_fails_the_execution_with_the_reason(
    tmp_path: Path, executor_for, written: str, error: str | None
) -> None:
    reports = Reports()
    executor = executor_for(tmp_path, reports, max_output_bytes=1024, max_json_depth=8)
    executor.submit(_spec(1, ["python3", "-c", _WRITE_OUTPUT, written]))
    try:
        finished = (await reports.wait(1))["ex-1"]
    finally:
        await executor.stop()
    if error is None:
        assert (finished.status, finished.output) == (RunStatus.SUCCESS, {"records": 8})
    else:
        assert finished.status is RunStatus.FAILURE
        assert finished.exit_code == 0 and finished.output is None
        assert error in (finished.error or "")


async def test_a_timed_out_process_gets_the_grace_to_end_cleanly(
    tmp_path: Path, executor_for
) -> None:
    # In a sandbox the group's leader is bwrap: SIGTERM must reach the step, not end bwrap
    # (which would SIGKILL the step at once).
    reports = Reports()
    executor = executor_for(tmp_path, reports)
    script = 'trap "sleep 0.2; echo cleaned up; exit 0" TERM; echo up; sleep 30 & wait'
    executor.submit(_spec(1, ["sh", "-c", script], timeout_s=0.5))
    finished = (await reports.wait(1))["ex-1"]
    await executor.stop()
    assert finished.status is RunStatus.TIMED_OUT
    assert finished.stdout_tail == "up\ncleaned up\n"


_LOOK_AROUND = """
import json, os
executions = os.path.dirname(os.path.dirname(os.getcwd()))
json.dump({
    "uid": os.getuid(),
    "executions": sorted(os.listdir(executions)),
    "pids": sorted(int(p) for p in os.listdir("/proc") if p.isdigit()),
    "etc_writable": os.access("/etc", os.W_OK),
}, open(os.environ["HOOKRUN_OUTPUT"], "w"))
"""


@pytest.mark.parametrize("isolation", ["isolated"], indirect=True)
async def test_an_isolated_execution_sees_neither_the_runner_nor_other_executions(
    tmp_path: Path, executor_for, isolation: Isolation
) -> None:
    if not isolation.sandboxed:
        missing_part("no sandbox here: run as root with bwrap and setpriv (make setup-sandbox)")
    reports = Reports()
    executor = executor_for(tmp_path, reports)
    executor.submit(_spec(1, ["sleep", "1"]))
    executor.submit(_spec(2, ["python3", "-c", _LOOK_AROUND]))
    finished = (await reports.wait(2))["ex-2"]
    await executor.stop()
    assert finished.status is RunStatus.SUCCESS, finished.stderr_tail
    seen = finished.output
    assert seen["executions"] == ["ex-2"]  # not ex-1, running beside it
    assert seen["pids"] == [1, 2]  # bwrap's init and the step: no runner, no other process
    assert not seen["etc_writable"]
    assert (seen["uid"] == 0) is (isolation.user is None)
