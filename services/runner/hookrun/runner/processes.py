"""ProcessExecutor: executions as subprocesses, at most ``concurrency`` at once."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import time
from collections import deque
from collections.abc import Awaitable
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any

from hookrun.events.base import Event, utcnow
from hookrun.events.limits import MAX_JSON_DEPTH, MAX_OUTPUT_BYTES
from hookrun.events.runs import ExecutionFinished, ExecutionHeartbeat, ExecutionStarted, RunStatus
from hookrun.runner.context import Phase
from hookrun.runner.executor import Emit
from hookrun.runner.isolation import Isolation
from hookrun.runner.spawning import SPAWNERS, Spawned, Spawner, kill_group
from hookrun.runner.specs import ExecutionSpec
from hookrun.runner.workdirs import Workdirs, open_logs, tail_fd

log = logging.getLogger(__name__)

#: Time a process gets between SIGTERM and SIGKILL when it times out or is canceled.
GRACE_S = 2.0
#: A process that ends this soon is reported in one append (ExecutionStarted with its end).
QUICK_S = 0.05


class _Handle:
    """One execution in this process: prepared, queued (maybe held), running, then reporting."""

    __slots__ = (
        "ack_waiter",
        "acked",
        "announce",
        "base",
        "env",
        "err",
        "heartbeat",
        "held",
        "kill_timer",
        "out",
        "phase",
        "pidfd",
        "proc",
        "spawning",
        "spec",
        "started_at",
        "status",
        "timer",
    )

    def __init__(self, spec: ExecutionSpec) -> None:
        self.spec = spec
        #: "queued" until spawned (held: until its ExecutionCreated is acknowledged), then
        #: "running" until its report is acknowledged; None once forgotten.
        self.phase: Phase = "queued"
        self.held = False
        self.base = ""
        self.env: dict[str, str] = {}
        #: stdout / stderr, open from preparation until the tails are read back.
        self.out = -1
        self.err = -1
        self.proc: subprocess.Popen[bytes] | None = None
        #: In the spawner thread right now.
        self.spawning = False
        self.pidfd = -1
        self.started_at: Any = None
        #: The quick window, then the timeout; the SIGKILL after SIGTERM's grace.
        self.timer: asyncio.TimerHandle | None = None
        self.kill_timer: asyncio.TimerHandle | None = None
        #: TIMED_OUT or CANCELED once the runner stopped the process.
        self.status: RunStatus | None = None
        #: The append of ExecutionStarted of a process that outlived the quick window.
        self.announce: asyncio.Task[None] | None = None
        self.heartbeat: asyncio.Task[None] | None = None
        #: ExecutionStarted is on the log (drop_partition waits for it).
        self.acked = False
        self.ack_waiter: asyncio.Future[None] | None = None

    def close_files(self) -> None:
        for fd in (self.out, self.err):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.out = self.err = -1

    def settle(self) -> None:
        """ExecutionStarted is acknowledged (or will never be): release drop_partition."""
        self.acked = True
        if self.ack_waiter is not None and not self.ack_waiter.done():
            self.ack_waiter.set_result(None)


class ProcessExecutor:
    """Executions as subprocesses (argv, no shell), at most ``concurrency`` at once.

    No task per execution. The work directory is prepared when the execution is submitted,
    which the runner does while its ExecutionCreated is still in flight to Kafka; the process
    starts only once that append is acknowledged (``release``) and a slot is free. A spawner
    thread runs ``Popen`` (vfork: the caller waits, with the GIL released, until the child has
    exec'd, which on a busy machine means until the child gets a CPU), the exit is a callback
    of the event loop (a pidfd), and the slot passes straight to the next queued execution.
    Quick executions that end in the same turn of the loop are reported in one append.
    """

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
        spawners: int = SPAWNERS,
        max_output_bytes: int = MAX_OUTPUT_BYTES,
        max_json_depth: int = MAX_JSON_DEPTH,
        isolation: Isolation | None = None,
    ) -> None:
        self.data_dir = data_dir
        isolation = isolation if isolation is not None else Isolation()
        self._workdirs = Workdirs(
            data_dir,
            max_output_bytes=max_output_bytes,
            max_json_depth=max_json_depth,
            owner=isolation.owner,
        )
        self.lease_s = lease_s
        self.quick_s = quick_s
        self.runner_id = runner_id
        self.concurrency = concurrency
        self._emit = emit
        self._handles: dict[str, _Handle] = {}
        #: Released executions waiting for a slot, oldest first (forgotten ones are skipped).
        self._queue: deque[_Handle] = deque()
        self._running = 0
        #: Processes handed to the spawner thread and not back yet.
        self._spawning = 0
        self._background: set[asyncio.Task[Any]] = set()
        # Quick executions that ended in the same turn of the loop are reported in one append.
        self._reports: list[Event] = []
        self._reporting: list[_Handle] = []
        self._stopping = False
        # Set whenever an execution stops waiting for a slot (see room()).
        self._moved = asyncio.Event()
        self._spawner = Spawner(use_guard=use_guard, threads=spawners, isolation=isolation)

    def phase(self, execution_id: str) -> Phase:
        handle = self._handles.get(execution_id)
        return handle.phase if handle is not None else None

    def backlog(self) -> int:
        """Executions submitted that still wait for a slot."""
        return sum(1 for h in self._handles.values() if h.phase == "queued")

    def running(self) -> int:
        """Processes alive now (never more than ``concurrency``)."""
        return self._running

    async def room(self, limit: int) -> None:
        """Return once fewer than ``limit`` executions wait for a slot."""
        while self.backlog() >= limit:
            self._moved.clear()
            await self._moved.wait()

    def submit(self, spec: ExecutionSpec, *, held: bool = False) -> None:
        """Prepare the work directory and queue the execution (``held``: until released)."""
        if spec.execution_id in self._handles or self._stopping:
            return
        handle = _Handle(spec)
        try:
            self._prepare(handle)
        except OSError:
            # Not remembered: the sweeper's next full pass derives the start again.
            handle.close_files()
            log.exception("cannot prepare execution %s", spec.execution_id)
            return
        self._handles[spec.execution_id] = handle
        handle.held = held
        if not held:
            self._enqueue(handle)

    def release(self, execution_id: str) -> None:
        """A held execution's ExecutionCreated is on the log: it may start."""
        handle = self._handles.get(execution_id)
        if handle is not None and handle.held and handle.phase == "queued":
            handle.held = False
            self._enqueue(handle)

    def discard(self, execution_id: str) -> None:
        """Forget a held execution whose ExecutionCreated was not appended."""
        handle = self._handles.get(execution_id)
        if handle is not None and handle.phase == "queued":
            self._forget(handle)

    def cancel(self, execution_id: str) -> None:
        handle = self._handles.get(execution_id)
        if handle is None:
            return
        if handle.phase == "queued":
            # Never spawned: report it canceled now instead of when a slot frees up.
            self._forget(handle)
            error = "run canceled before it started"
            canceled = self._workdirs.finished(handle.spec, RunStatus.CANCELED, None, error=error)
            self._spawn_task(self._emit([canceled]))
        elif handle.spawning:
            handle.status = handle.status or RunStatus.CANCELED  # stopped once it is spawned
        elif handle.proc is not None and handle.proc.returncode is None:
            self._stop_process(handle, RunStatus.CANCELED)

    async def drop_partition(self, partition: int) -> None:
        """Forget queued executions of a revoked partition; running ones go on and report.

        Waits until every ExecutionStarted already underway is acknowledged, so the partition's
        next owner, which replays to the log end, sees them and does not start them again.
        """
        starting = []
        for handle in list(self._handles.values()):
            if handle.spec.partition != partition:
                continue
            if handle.phase == "queued":
                self._forget(handle)
            elif not handle.acked:
                if handle.ack_waiter is None:
                    handle.ack_waiter = asyncio.get_running_loop().create_future()
                starting.append(handle.ack_waiter)
        if starting:
            await asyncio.wait(starting, timeout=10)

    async def stop(self) -> None:
        """Kill running executions (their leases expire; a new owner aborts or retries them)."""
        self._stopping = True
        for handle in list(self._handles.values()):
            if handle.phase == "queued":
                self._forget(handle)
            elif handle.proc is not None and handle.proc.returncode is None:
                kill_group(handle.proc.pid, signal.SIGKILL)
        for task in self._background:
            task.cancel()
        deadline = time.monotonic() + GRACE_S + 3
        # Processes being spawned are killed as soon as they are (see _spawned).
        while self._spawning or any(
            h.proc is not None and h.proc.returncode is None for h in self._handles.values()
        ):
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.02)
        if self._background:
            await asyncio.wait(list(self._background), timeout=GRACE_S + 3)
        await self._spawner.close()

    def _spawn_task(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    def _forget(self, handle: _Handle) -> None:
        """Drop a handle that will not run (its place in the queue is skipped)."""
        if handle.phase == "queued":
            self._moved.set()
        handle.phase = None
        handle.close_files()
        if self._handles.get(handle.spec.execution_id) is handle:
            del self._handles[handle.spec.execution_id]

    def _prepare(self, handle: _Handle) -> None:
        handle.base, env = self._workdirs.prepare(handle.spec, self._spawner.env)
        handle.env = self._spawner.isolation.environ(env, handle.base)
        handle.out, handle.err = open_logs(handle.base)

    def _enqueue(self, handle: _Handle) -> None:
        if self._running < self.concurrency:
            self._start(handle)
        else:
            self._queue.append(handle)

    def _next(self) -> None:
        """Give free slots to the oldest queued executions."""
        while self._queue and self._running < self.concurrency:
            handle = self._queue.popleft()
            if handle.phase == "queued" and not self._stopping:
                self._start(handle)

    def _start(self, handle: _Handle) -> None:
        """Take a slot and spawn the process (in a spawner thread, see Spawner.start)."""
        handle.phase = "running"
        handle.spawning = True
        self._running += 1
        self._spawning += 1
        self._moved.set()
        self._spawner.start(
            handle.spec.argv,
            base=handle.base,
            env=handle.env,
            stdout=handle.out,
            stderr=handle.err,
            done=partial(self._spawned, handle),
        )

    def _spawned(self, handle: _Handle, spawned: Spawned) -> None:
        """Back on the loop: watch the process for its exit (or report why it did not start)."""
        spec = handle.spec
        handle.spawning = False
        self._spawning -= 1
        if isinstance(spawned, BaseException):
            self._running -= 1
            self._next()
            handle.close_files()
            if self._stopping:
                self._forget(handle)
                return
            error = f"cannot start: {spawned}"
            self._queue_report(
                handle, [self._workdirs.finished(spec, RunStatus.FAILURE, None, error=error)]
            )
            return
        proc, handle.started_at = spawned
        handle.proc = proc
        handle.pidfd = self._spawner.watch(proc, partial(self._exited, handle))
        if self._stopping:
            kill_group(proc.pid, signal.SIGKILL)
            return
        if handle.status is not None:  # canceled while it was being spawned
            status, handle.status = handle.status, None
            self._stop_process(handle, status)
            return
        # A process that ends within the quick window is reported in one append, Started
        # together with Finished: its lease would protect nothing in that time.
        loop = asyncio.get_running_loop()
        handle.timer = loop.call_later(min(self.quick_s, spec.timeout_s), self._outlived, handle)

    def _started(self, handle: _Handle) -> ExecutionStarted:
        assert handle.proc is not None
        return ExecutionStarted(
            run_id=handle.spec.run_id,
            execution_id=handle.spec.execution_id,
            runner_id=self.runner_id,
            pid=handle.proc.pid,
            lease_until=handle.started_at + timedelta(seconds=self.lease_s),
            occurred_at=handle.started_at,
        )

    def _outlived(self, handle: _Handle) -> None:
        """The quick window passed: announce ExecutionStarted and lease, then watch the timeout."""
        handle.timer = None
        if self._stopping:
            return
        spec = handle.spec
        # Sent now, acknowledged in the background; Finished waits for it, so the order on the
        # partition stays Started, Heartbeat..., Finished.
        handle.announce = self._spawn_task(self._announce(handle))
        handle.heartbeat = self._spawn_task(self._heartbeat(spec))
        remaining = spec.timeout_s - self.quick_s
        if remaining <= 0:
            self._stop_process(handle, RunStatus.TIMED_OUT)
        else:
            handle.timer = asyncio.get_running_loop().call_later(
                remaining, self._stop_process, handle, RunStatus.TIMED_OUT
            )

    async def _announce(self, handle: _Handle) -> None:
        try:
            await self._emit([self._started(handle)])
        finally:
            handle.settle()

    def _stop_process(self, handle: _Handle, status: RunStatus) -> None:
        """SIGTERM the process group, give it GRACE_S, then SIGKILL it."""
        proc = handle.proc
        if proc is None or proc.returncode is not None or handle.status is not None:
            return
        handle.status = status
        if handle.timer is not None:
            handle.timer.cancel()
            handle.timer = None
        self._spawner.terminate(proc.pid)
        handle.kill_timer = asyncio.get_running_loop().call_later(
            GRACE_S, kill_group, proc.pid, signal.SIGKILL
        )

    def _exited(self, handle: _Handle) -> None:
        """The process ended: free its slot for the next one, then report it."""
        proc = handle.proc
        assert proc is not None
        code = self._spawner.reap(proc, handle.pidfd)
        handle.pidfd = -1
        for timer in (handle.timer, handle.kill_timer):
            if timer is not None:
                timer.cancel()
        handle.timer = handle.kill_timer = None
        if handle.heartbeat is not None:
            handle.heartbeat.cancel()
        self._running -= 1
        self._next()
        tails = tail_fd(handle.out), tail_fd(handle.err)
        handle.close_files()
        if self._stopping:
            # The runner stops: nothing is reported (the lease, if any, expires).
            self._forget(handle)
            handle.settle()
            return
        try:
            self._report_exit(handle, code, tails)
        except Exception:
            # Forgotten unreported: a lease (if announced) expires, else the sweeper's next full
            # pass starts the execution again.
            log.exception("execution %s failed in the runner", handle.spec.execution_id)
            handle.settle()
            self._forget(handle)

    def _report_exit(self, handle: _Handle, code: int, tails: tuple[str, str]) -> None:
        status = handle.status
        if status is None:
            status = RunStatus.SUCCESS if code == 0 else RunStatus.FAILURE
        error = {
            RunStatus.SUCCESS: None,
            RunStatus.FAILURE: f"exit code {code}",
            RunStatus.TIMED_OUT: f"timed out after {handle.spec.timeout_s:g} s",
            RunStatus.CANCELED: "run canceled",
        }.get(status)
        finished = self._workdirs.finished(
            handle.spec, status, code, error=error, started_at=handle.started_at, tails=tails
        )
        if handle.announce is None:
            self._queue_report(handle, [self._started(handle), finished])
        else:
            self._spawn_task(self._report_after_announce(handle, finished))

    def _queue_report(self, handle: _Handle, events: list[Event]) -> None:
        """Report at the end of this turn of the loop, with whatever else ended in it."""
        if not self._reporting:
            asyncio.get_running_loop().call_soon(self._flush_reports)
        self._reports.extend(events)
        self._reporting.append(handle)

    def _flush_reports(self) -> None:
        events, handles = self._reports, self._reporting
        self._reports, self._reporting = [], []
        if events:
            self._spawn_task(self._report(events, handles))

    async def _report(self, events: list[Event], handles: list[_Handle]) -> None:
        try:
            await self._emit(events)
        except Exception:
            log.exception("executions %s not reported", [h.spec.execution_id for h in handles])
        finally:
            for handle in handles:
                handle.settle()
                self._forget(handle)

    async def _report_after_announce(self, handle: _Handle, finished: ExecutionFinished) -> None:
        try:
            assert handle.announce is not None
            await handle.announce
            await self._emit([finished])
        except Exception:
            log.exception("execution %s not reported", handle.spec.execution_id)
        finally:
            self._forget(handle)

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
