"""I/O of the runner: executions as processes (and a fake), and the pipeline definition index."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import shutil
import signal
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any, Protocol

import orjson

from hookrun.events import topics
from hookrun.events.base import Event, utcnow
from hookrun.events.kafka import TopicTable
from hookrun.events.runs import (
    ExecutionFinished,
    ExecutionHeartbeat,
    ExecutionStarted,
    PipelineDefined,
    RunStatus,
)
from hookrun.runner.guard import Guard
from hookrun.runner.handlers import ExecutionSpec, Phase

log = logging.getLogger(__name__)

Emit = Callable[[list[Event]], Awaitable[None]]

TAIL_BYTES = 4096
#: Time a process gets between SIGTERM and SIGKILL when it times out or is canceled.
GRACE_S = 2.0
#: A process that ends this soon is reported in one append (ExecutionStarted with its end).
QUICK_S = 0.05

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child before exec: ask Linux to SIGKILL it when the runner dies (kill -9 included).

    Without it an execution of a killed runner would live on unsupervised while another runner
    aborts or retries it.
    """
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


class Executor(Protocol):
    """Runs executions; reports ExecutionStarted/Heartbeat/Finished through its emit callback."""

    def phase(self, execution_id: str) -> Phase: ...

    def submit(self, spec: ExecutionSpec) -> None: ...

    def cancel(self, execution_id: str) -> None: ...

    def backlog(self) -> int: ...

    async def room(self, limit: int) -> None: ...

    async def drop_partition(self, partition: int) -> None: ...

    async def stop(self) -> None: ...


class _Handle:
    def __init__(self, spec: ExecutionSpec) -> None:
        self.spec = spec
        self.phase: Phase = "queued"
        self.task: asyncio.Task[None] | None = None
        self.cancel = asyncio.Event()
        #: The publication of ExecutionStarted, once the process is spawned.
        self.starting: asyncio.Future[None] | None = None


class ProcessExecutor:
    """Executions as subprocesses (argv, no shell), at most ``concurrency`` at once."""

    def __init__(
        self,
        data_dir: Path,
        *,
        concurrency: int,
        lease_s: float,
        runner_id: str,
        emit: Emit,
        use_guard: bool = True,
        quick_s: float = QUICK_S,
    ) -> None:
        self.data_dir = data_dir
        self.lease_s = lease_s
        self.quick_s = quick_s
        self.runner_id = runner_id
        self._emit = emit
        self._sem = asyncio.Semaphore(concurrency)
        self._handles: dict[str, _Handle] = {}
        self._background: set[asyncio.Task[Any]] = set()
        # Set whenever an execution stops waiting for a slot (see room()).
        self._moved = asyncio.Event()
        # Executions must not outlive a killed runner. The guard process kills them when the
        # runner dies (see guard.py); without one, a parent-death signal per execution does:
        # util-linux `setpriv --pdeathsig KILL` (an extra exec per execution), else a preexec
        # hook (which makes Python fork the runner instead of vforking it).
        self._guard: Guard | None = None
        if use_guard:
            try:
                self._guard = Guard()
            except OSError as exc:
                log.warning("no execution guard (%r): using a parent-death signal instead", exc)
        setpriv = shutil.which("setpriv")
        self._wrapper: tuple[str, ...] = (
            (setpriv, "--pdeathsig", "KILL", "--") if setpriv and self._guard is None else ()
        )

    def phase(self, execution_id: str) -> Phase:
        handle = self._handles.get(execution_id)
        return handle.phase if handle is not None else None

    def backlog(self) -> int:
        """Executions submitted that still wait for a slot."""
        return sum(1 for h in self._handles.values() if h.phase == "queued")

    async def room(self, limit: int) -> None:
        """Return once fewer than ``limit`` executions wait for a slot."""
        while self.backlog() >= limit:
            self._moved.clear()
            await self._moved.wait()

    def submit(self, spec: ExecutionSpec) -> None:
        if spec.execution_id in self._handles:
            return
        handle = _Handle(spec)
        self._handles[spec.execution_id] = handle
        handle.task = asyncio.create_task(self._run(handle), name=f"exec-{spec.execution_id}")

    def cancel(self, execution_id: str) -> None:
        handle = self._handles.get(execution_id)
        if handle is None:
            return
        if handle.phase == "queued" and handle.task is not None:
            # Never spawned: report it canceled now instead of when a slot frees up.
            handle.task.cancel()
            self._handles.pop(execution_id, None)
            self._spawn(
                self._emit(
                    [
                        self._finished(
                            handle.spec,
                            RunStatus.CANCELED,
                            None,
                            error="run canceled before it started",
                        )
                    ]
                )
            )
        else:
            handle.cancel.set()

    async def drop_partition(self, partition: int) -> None:
        """Forget queued executions of a revoked partition; running ones go on and report.

        Waits until every ExecutionStarted already underway is acknowledged, so the partition's
        next owner, which replays to the log end, sees them and does not start them again.
        """
        starting = []
        for eid, handle in list(self._handles.items()):
            if handle.spec.partition != partition:
                continue
            if handle.phase == "queued" and handle.task is not None:
                handle.task.cancel()
                self._handles.pop(eid, None)
            elif handle.starting is not None and not handle.starting.done():
                starting.append(handle.starting)
        if starting:
            await asyncio.wait(starting, timeout=10)

    async def stop(self) -> None:
        """Kill running executions (their leases expire; a new owner aborts or retries them)."""
        for handle in list(self._handles.values()):
            if handle.task is not None:
                handle.task.cancel()
        tasks = [h.task for h in self._handles.values() if h.task is not None]
        tasks += list(self._background)
        if tasks:
            await asyncio.wait(tasks, timeout=GRACE_S + 3)
        if self._guard is not None:
            await asyncio.to_thread(self._guard.close)

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _run(self, handle: _Handle) -> None:
        try:
            await self._execute(handle)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("execution %s failed in the runner", handle.spec.execution_id)
        finally:
            self._handles.pop(handle.spec.execution_id, None)
            self._moved.set()

    def _prepare(self, spec: ExecutionSpec) -> tuple[Path, dict[str, str]]:
        base = self.data_dir / "executions" / spec.execution_id
        work, inputs, outputs = base / "work", base / "inputs", base / "outputs"
        # A retry or a re-start after a crash gets a fresh directory: nothing half-written stays.
        # (mkdir first and rmtree only when it exists: the common case is one syscall.)
        try:
            base.mkdir(parents=True)
        except FileExistsError:
            shutil.rmtree(base)
            base.mkdir()
        for d in (work, inputs, outputs):
            d.mkdir()
        for source in spec.input_dirs:
            if source.is_dir():
                for item in source.iterdir():
                    if item.is_file():
                        shutil.copy2(item, inputs / item.name)
        for name, content in spec.inputs.items():
            (inputs / name).write_bytes(content)
        (base / "parameters.json").write_bytes(orjson.dumps(spec.params))
        env = {
            **spec.env,
            "HOOKRUN_RUN_ID": spec.run_id,
            "HOOKRUN_EXECUTION_ID": spec.execution_id,
            "HOOKRUN_TRIGGER_ID": spec.trigger_id,
            "HOOKRUN_PARAMETERS": str(base / "parameters.json"),
            "HOOKRUN_INPUTS": str(inputs),
            "HOOKRUN_OUTPUTS": str(outputs),
            "HOOKRUN_OUTPUT": str(base / "output.json"),
        }
        return base, env

    async def _execute(self, handle: _Handle) -> None:
        spec = handle.spec
        # The slot is held only while the process lives: reporting (Kafka round trips) happens
        # outside it, so acknowledgements never limit how many processes run.
        async with self._sem:
            handle.phase = "running"
            self._moved.set()
            base, env = self._prepare(spec)
            # Open while the process lives: the tails are read back through the same files
            # (w+b) instead of being reopened.
            with (base / "stdout").open("w+b") as out, (base / "stderr").open("w+b") as err:
                guard = self._guard
                try:
                    proc = await asyncio.create_subprocess_exec(
                        *self._wrapper,
                        *spec.argv,
                        cwd=base / "work",
                        env={**env, **guard.env} if guard else env,
                        stdin=asyncio.subprocess.DEVNULL,
                        stdout=out,
                        stderr=err,
                        start_new_session=True,  # its own group: a timeout kills its children
                        preexec_fn=None if guard or self._wrapper else _die_with_parent,
                    )
                    if guard:
                        guard.register(proc.pid)
                except OSError as exc:
                    proc = None
                    error = f"cannot start: {exc}"
                if proc is None:
                    await self._emit([self._finished(spec, RunStatus.FAILURE, None, error=error)])
                    return
                started_at = utcnow()
                started = ExecutionStarted(
                    run_id=spec.run_id,
                    execution_id=spec.execution_id,
                    runner_id=self.runner_id,
                    pid=proc.pid,
                    lease_until=started_at + timedelta(seconds=self.lease_s),
                    occurred_at=started_at,
                )
                # Settled once ExecutionStarted is on the log (drop_partition waits for it).
                handle.starting = asyncio.get_running_loop().create_future()
                status: RunStatus | None = None
                waiter = asyncio.create_task(proc.wait())
                canceller = asyncio.create_task(handle.cancel.wait())
                announce: asyncio.Future[None] | None = None
                heartbeat: asyncio.Task[None] | None = None
                try:
                    # A process that ends within QUICK_S is reported in one append, Started
                    # together with Finished (and what they cause): one acknowledgement per
                    # execution instead of two. Its lease would protect nothing in that time.
                    done, _ = await asyncio.wait(
                        {waiter, canceller},
                        timeout=min(self.quick_s, spec.timeout_s),
                        return_when=asyncio.FIRST_COMPLETED,
                    )
                    if not done:
                        # Sent now, acknowledged in the background; Finished waits for it, so
                        # the order on the partition stays Started, Heartbeat..., Finished.
                        announce = asyncio.ensure_future(self._emit([started]))
                        announce.add_done_callback(lambda _: _settle(handle.starting))
                        heartbeat = asyncio.create_task(self._heartbeat(spec))
                        done, _ = await asyncio.wait(
                            {waiter, canceller},
                            timeout=max(0.0, spec.timeout_s - self.quick_s),
                            return_when=asyncio.FIRST_COMPLETED,
                        )
                    if waiter not in done:
                        status = RunStatus.CANCELED if canceller in done else RunStatus.TIMED_OUT
                        await _terminate(proc, waiter)
                except asyncio.CancelledError:
                    # The runner stops: the process must not outlive it unsupervised.
                    _killpg(proc.pid, signal.SIGKILL)
                    _settle(handle.starting)
                    raise
                finally:
                    if heartbeat is not None:
                        heartbeat.cancel()
                    canceller.cancel()
                    if guard:
                        guard.release(proc.pid)
                tails = _tail_of(out), _tail_of(err)
        code = proc.returncode
        if status is None:
            status = RunStatus.SUCCESS if code == 0 else RunStatus.FAILURE
        error = {
            RunStatus.SUCCESS: None,
            RunStatus.FAILURE: f"exit code {code}",
            RunStatus.TIMED_OUT: f"timed out after {spec.timeout_s:g} s",
            RunStatus.CANCELED: "run canceled",
        }.get(status)
        finished = self._finished(
            spec, status, code, error=error, started_at=started_at, tails=tails
        )
        if announce is None:
            try:
                await self._emit([started, finished])
            finally:
                _settle(handle.starting)
        else:
            await announce
            await self._emit([finished])

    async def _heartbeat(self, spec: ExecutionSpec) -> None:
        while True:
            await asyncio.sleep(self.lease_s / 3)
            try:
                await self._emit(
                    [
                        ExecutionHeartbeat(
                            run_id=spec.run_id,
                            execution_id=spec.execution_id,
                            runner_id=self.runner_id,
                            lease_until=utcnow() + timedelta(seconds=self.lease_s),
                        )
                    ]
                )
            except Exception as exc:  # a missed beat only shortens the lease; keep beating
                log.warning("heartbeat of %s not sent: %r", spec.execution_id, exc)

    def _finished(
        self,
        spec: ExecutionSpec,
        status: RunStatus,
        code: int | None,
        *,
        error: str | None,
        started_at: Any = None,
        tails: tuple[str, str] | None = None,
    ) -> ExecutionFinished:
        base = self.data_dir / "executions" / spec.execution_id
        if tails is None:
            tails = _tail(base / "stdout"), _tail(base / "stderr")
        now = utcnow()
        output = None
        if status is RunStatus.SUCCESS:
            with contextlib.suppress(OSError, orjson.JSONDecodeError):
                output = orjson.loads((base / "output.json").read_bytes())
        return ExecutionFinished(
            run_id=spec.run_id,
            execution_id=spec.execution_id,
            status=status,
            exit_code=code,
            started_at=started_at,
            completed_at=now,
            duration_ms=int((now - started_at).total_seconds() * 1000) if started_at else None,
            output=output,
            stdout_tail=tails[0],
            stderr_tail=tails[1],
            error=error,
        )


def _settle(future: asyncio.Future[None] | None) -> None:
    if future is not None and not future.done():
        future.set_result(None)


def _killpg(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


async def _terminate(proc: asyncio.subprocess.Process, waiter: asyncio.Task[int]) -> None:
    """SIGTERM the process group, give it GRACE_S, then SIGKILL it."""
    _killpg(proc.pid, signal.SIGTERM)
    try:
        await asyncio.wait_for(asyncio.shield(waiter), GRACE_S)
    except TimeoutError:
        _killpg(proc.pid, signal.SIGKILL)
        await waiter


def _tail(path: Path) -> str:
    try:
        with path.open("rb") as f:
            return _tail_of(f)
    except OSError:
        return ""


def _tail_of(f: Any) -> str:
    """The last TAIL_BYTES of an open file, as text."""
    try:
        size = f.seek(0, os.SEEK_END)
        f.seek(max(0, size - TAIL_BYTES))
        return str(f.read().decode("utf-8", "replace"))
    except OSError:
        return ""


class FakeExecutor:
    """Records what would run; tests finish executions by hand through ``finish``."""

    def __init__(self, emit: Emit | None = None) -> None:
        self.submitted: dict[str, ExecutionSpec] = {}
        self.canceled: list[str] = []
        self.dropped: list[int] = []
        self._emit = emit

    def phase(self, execution_id: str) -> Phase:
        return "running" if execution_id in self.submitted else None

    def submit(self, spec: ExecutionSpec) -> None:
        self.submitted[spec.execution_id] = spec

    def cancel(self, execution_id: str) -> None:
        self.canceled.append(execution_id)

    def backlog(self) -> int:
        return 0

    async def room(self, limit: int) -> None:
        return None

    async def drop_partition(self, partition: int) -> None:
        self.dropped.append(partition)

    async def stop(self) -> None:
        self.submitted.clear()


class PipelineIndex(Protocol):
    """Pipeline definitions by id, across every run (copy_pipeline's source)."""

    async def catch_up(self) -> None: ...

    def lookup(self, pipeline_id: str) -> PipelineDefined | None: ...

    def remember(self, definition: PipelineDefined) -> None: ...


class KafkaPipelineIndex:
    """Follows the compacted pipelines topic; catch_up gives read-your-writes across runners."""

    def __init__(self, bootstrap: str, *, namespace: str = topics.NAMESPACE) -> None:
        self._defs: dict[str, PipelineDefined] = {}
        self._table = TopicTable(
            bootstrap, "runner", topics.named(topics.PIPELINES, namespace), self._apply
        )

    def _apply(self, event: Event) -> None:
        if isinstance(event, PipelineDefined):
            self._defs[event.pipeline_id] = event

    async def start(self) -> None:
        await self._table.start()

    async def stop(self) -> None:
        await self._table.stop()

    async def catch_up(self) -> None:
        await self._table.catch_up()

    def lookup(self, pipeline_id: str) -> PipelineDefined | None:
        return self._defs.get(pipeline_id)

    def remember(self, definition: PipelineDefined) -> None:
        self._defs[definition.pipeline_id] = definition


class FakePipelineIndex:
    def __init__(self) -> None:
        self._defs: dict[str, PipelineDefined] = {}

    async def catch_up(self) -> None:
        return None

    def lookup(self, pipeline_id: str) -> PipelineDefined | None:
        return self._defs.get(pipeline_id)

    def remember(self, definition: PipelineDefined) -> None:
        self._defs[definition.pipeline_id] = definition
