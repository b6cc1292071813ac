"""Execution processes: spawned off the loop, unable to outlive the runner, watched to their end."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import logging
import os
import signal
import subprocess
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from functools import partial

from hookrun.events.base import utcnow
from hookrun.runner.guard import Guard
from hookrun.runner.isolation import Isolation

log = logging.getLogger(__name__)

#: Threads that spawn processes, so the event loop never waits for a vfork'd child's exec
#: (0: spawn on the event loop itself).
SPAWNERS = 4

_PR_SET_PDEATHSIG = 1

#: A process and when it started, or why it could not start.
Spawned = tuple[subprocess.Popen[bytes], datetime] | BaseException


def _die_with_parent() -> None:
    """In the child before exec: ask Linux to SIGKILL it when the runner dies (kill -9 included).

    Without it an execution of a killed runner would live on unsupervised while another runner
    aborts or retries it.
    """
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def kill_group(pid: int, sig: signal.Signals) -> None:
    """Signal the process group of an execution (its process and whatever it started)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


class Spawner:
    """Starts each process in a session of its own (a timeout kills its whole group), with no
    stdin, in a spawner thread; calls back on the event loop once it is spawned and once it
    exited."""

    def __init__(
        self,
        *,
        use_guard: bool = True,
        threads: int = SPAWNERS,
        isolation: Isolation | None = None,
    ) -> None:
        self._devnull = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        self._threads = (
            ThreadPoolExecutor(threads, thread_name_prefix="hookrun-spawn") if threads else None
        )
        self._pidfd = hasattr(os, "pidfd_open")
        # Executions must not outlive a killed runner. The guard process kills them when the
        # runner dies (see guard.py); without one, a parent-death signal per execution does:
        # the isolation wrapper's (bwrap --die-with-parent, or util-linux `setpriv --pdeathsig
        # KILL`: an extra exec per execution unless it switches the user anyway), else a
        # preexec hook (which makes Python fork the runner instead of vforking it).
        self._guard: Guard | None = None
        if use_guard:
            try:
                self._guard = Guard()
            except OSError as exc:
                log.warning("no execution guard (%r): using a parent-death signal instead", exc)
        self.isolation = isolation if isolation is not None else Isolation()
        self._pdeathsig = self._guard is None and self.isolation.can_pdeathsig
        self._preexec = _die_with_parent if self._guard is None and not self._pdeathsig else None
        #: The spawned argv is a wrapper: its own exec cannot fail for a missing command, so
        #: that is checked before (the wrapper's exit code 127 would say less).
        self._wrapped = self.isolation.wraps(pdeathsig=self._pdeathsig)
        #: What every execution's environment gets (the guard finds its executions by it).
        self.env = self._guard.env if self._guard is not None else {}

    def terminate(self, pid: int) -> None:
        """SIGTERM an execution's process group. In a sandbox the group's leader is bwrap, which
        would die of it and take the execution down at once (its --die-with-parent), without
        the grace to end cleanly: every other process of the group gets it instead (bwrap's
        init inside the sandbox ignores it). SIGKILL after the grace still goes to the group.
        The pass over /proc (a few ms) is made on a timeout or a cancel only."""
        if not self.isolation.sandboxed:
            kill_group(pid, signal.SIGTERM)
            return
        for name in os.listdir("/proc"):
            if name.isdigit() and int(name) != pid:
                with contextlib.suppress(OSError):
                    if os.getpgid(int(name)) == pid:
                        os.kill(int(name), signal.SIGTERM)

    def start(
        self,
        argv: list[str],
        *,
        base: str,
        env: dict[str, str],
        stdout: int,
        stderr: int,
        done: Callable[[Spawned], None],
    ) -> None:
        """Spawn ``argv`` in the execution directory ``base`` (its cwd is ``base``/work);
        ``done`` gets the process (or the error) on the event loop.

        ``Popen`` vforks: the calling thread waits until the child has exec'd, which on a busy
        machine means until the child gets a CPU. The spawner thread waits instead of the
        event loop (Python drops the GIL around vfork since 3.11.6/3.12; docs/decisions/0012).
        Without threads, ``done`` is called before this returns.
        """
        spawn = partial(self._spawn, argv, base, env, stdout, stderr)
        if self._threads is None:
            done(_attempt(spawn))
        else:
            self._threads.submit(_in_thread, spawn, asyncio.get_running_loop(), done)

    def _spawn(
        self, argv: list[str], base: str, env: dict[str, str], stdout: int, stderr: int
    ) -> tuple[subprocess.Popen[bytes], datetime]:
        cwd = f"{base}/work"
        if self._wrapped:
            _check_command(argv[0], env, cwd)
        proc = subprocess.Popen(
            self.isolation.command(argv, base, pdeathsig=self._pdeathsig),
            cwd=cwd,
            env=env,
            stdin=self._devnull,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,  # its own group: a timeout kills its children
            preexec_fn=self._preexec,
        )
        started_at = utcnow()
        if self._guard is not None:
            self._guard.register(proc.pid)
        return proc, started_at

    def watch(self, proc: subprocess.Popen[bytes], exited: Callable[[], None]) -> int:
        """Call ``exited`` on the event loop once ``proc`` ended; return the pidfd that watches
        it (-1: a thread waits for it instead), for ``reap``."""
        loop = asyncio.get_running_loop()
        pidfd = -1
        if self._pidfd:
            try:
                pidfd = os.pidfd_open(proc.pid)
            except OSError:
                self._pidfd = False
        if pidfd >= 0:
            loop.add_reader(pidfd, exited)
        else:
            threading.Thread(target=_wait, args=(proc, loop, exited), daemon=True).start()
        return pidfd

    def reap(self, proc: subprocess.Popen[bytes], pidfd: int) -> int:
        """Once ``proc`` ended: stop watching it, collect its exit code, release its group."""
        if pidfd >= 0:
            asyncio.get_running_loop().remove_reader(pidfd)
            os.close(pidfd)
        code = proc.poll()
        if code is None:  # cannot happen after the pidfd said so; wait rather than guess
            code = proc.wait()
        if self._guard is not None:
            self._guard.release(proc.pid)
        return code

    async def close(self) -> None:
        """Stop the spawner threads and end the guard (which kills what is still registered)."""
        if self._threads is not None:
            self._threads.shutdown(wait=False)
        with contextlib.suppress(OSError):
            os.close(self._devnull)
        if self._guard is not None:
            await asyncio.to_thread(self._guard.close)


def _check_command(command: str, env: dict[str, str], cwd: str) -> None:
    """Raise what exec would for a ``command`` found nowhere (as ``Popen`` does unwrapped)."""
    if "/" in command:
        if os.path.exists(os.path.join(cwd, command)):
            return
    else:
        for folder in env.get("PATH", os.defpath).split(os.pathsep):
            path = os.path.join(cwd, folder or ".", command)
            if os.path.isfile(path) and os.access(path, os.X_OK):
                return
    raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), command)


def _attempt(spawn: Callable[[], tuple[subprocess.Popen[bytes], datetime]]) -> Spawned:
    try:
        return spawn()
    except BaseException as exc:  # reported by done
        return exc


def _in_thread(
    spawn: Callable[[], tuple[subprocess.Popen[bytes], datetime]],
    loop: asyncio.AbstractEventLoop,
    done: Callable[[Spawned], None],
) -> None:
    """In a spawner thread: spawn, then continue on the loop."""
    spawned = _attempt(spawn)
    with contextlib.suppress(RuntimeError):  # the loop is closed: the runner is gone
        loop.call_soon_threadsafe(done, spawned)


def _wait(
    proc: subprocess.Popen[bytes], loop: asyncio.AbstractEventLoop, exited: Callable[[], None]
) -> None:
    """Without pidfds: wait in a thread, then continue on the loop."""
    proc.wait()
    with contextlib.suppress(RuntimeError):  # the loop is closed: the runner is gone
        loop.call_soon_threadsafe(exited)
