"""The execution guard: kills a runner's executions when the runner dies, however it dies.

Executions run in sessions of their own (so a timeout can kill a whole process group), which
also means nothing takes them down with a killed runner. A parent-death signal would, but
setting one costs either a ``preexec_fn`` (Python then forks instead of vforking the runner's
whole address space) or an extra ``setpriv`` exec per execution, on every spawn; the guard
costs a line on a pipe when an execution starts and one when it ends (docs/decisions/0011).

The guard is one small process per runner, in its own session, started once. The runner writes
``+<pgid>`` when it spawns an execution and ``-<pgid>`` when it ends, on a pipe only the runner
holds. When the runner dies (kill -9 included) the kernel closes the pipe: the guard reads end
of file, SIGKILLs every group still registered, then every process whose environment carries
this runner's marker (an execution spawned in the instant before it was registered), and exits.
A process caught inside its exec has no environment to read for a moment (Popen returns once
the exec has begun, before the kernel sets the new environment up), so those are read again,
for up to a second.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import subprocess
import sys

log = logging.getLogger(__name__)

#: Environment variable that marks the processes of one runner's executions.
MARKER_VAR = "HOOKRUN_GUARD"

# Run with `python -I -S -c`: no site, no hookrun imports, so it is small and quick to start.
_SOURCE = r"""
import os, select, signal, sys, time
marker = sys.argv[1].encode()
groups = set()
# The pipe is drained now and then, not line by line: a blocking read would wake the guard (and
# cost the runner a context switch) twice per execution. poll() without events reports only
# the hang-up, which comes the moment the runner's end is closed.
os.set_blocking(0, False)
hangup = select.poll()
hangup.register(0, 0)
rest = b""
while True:
    hangup.poll(200)
    try:
        chunk = os.read(0, 1 << 16)
    except BlockingIOError:
        continue
    while chunk:
        lines = (rest + chunk).split(b"\n")
        rest = lines.pop()
        for line in lines:
            op, _, pgid = line.strip().partition(b" ")
            if op == b"+":
                groups.add(int(pgid))
            elif op == b"-":
                groups.discard(int(pgid))
        try:
            chunk = os.read(0, 1 << 16)
        except BlockingIOError:
            break
    else:
        break  # end of file: the runner is gone
def kill(pgid):
    try:
        os.killpg(pgid, signal.SIGKILL)
    except OSError:
        pass
for pgid in groups:
    kill(pgid)
# Kill the groups of the marked among pids; return those whose environment reads empty but
# are not zombies: in the middle of an exec, their new environment not yet in place.
def unmarked(pids):
    later = []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                env = f.read()
            if marker in env.split(b"\0"):
                kill(os.getpgid(pid))
            elif not env:
                with open(f"/proc/{pid}/stat", "rb") as f:
                    if f.read().rsplit(b")", 1)[1].split()[0] != b"Z":
                        later.append(pid)
        except OSError:
            pass
    return later
me = os.getpid()
waiting = unmarked([int(n) for n in os.listdir("/proc") if n.isdigit() and int(n) != me])
deadline = time.monotonic() + 1.0
while waiting and time.monotonic() < deadline:
    time.sleep(0.01)
    waiting = unmarked(waiting)
"""


class Guard:
    """The runner's side of the guard process: register and release execution groups."""

    def __init__(self) -> None:
        self.marker = f"{MARKER_VAR}={secrets.token_hex(8)}"
        self._proc = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", _SOURCE, self.marker],
            stdin=subprocess.PIPE,
            start_new_session=True,  # a kill of the runner's process group spares it
            close_fds=True,
        )
        assert self._proc.stdin is not None
        self._fd = self._proc.stdin.fileno()
        os.set_inheritable(self._fd, False)

    @property
    def env(self) -> dict[str, str]:
        """What every execution's environment gets, so the guard can find it by its marker."""
        name, _, value = self.marker.partition("=")
        return {name: value}

    @property
    def alive(self) -> bool:
        return self._proc.poll() is None

    def register(self, pgid: int) -> None:
        self._write(f"+ {pgid}\n")

    def release(self, pgid: int) -> None:
        self._write(f"- {pgid}\n")

    def _write(self, line: str) -> None:
        # A few bytes on a pipe the guard drains every 0.2 s (64 KiB: thousands of lines).
        try:
            os.write(self._fd, line.encode())
        except OSError as exc:
            log.warning("execution guard gone (%r): executions may outlive a killed runner", exc)

    def close(self, timeout_s: float = 2.0) -> None:
        """End the guard (it kills what is still registered) and reap it."""
        if self._proc.stdin is not None:
            with contextlib.suppress(OSError):
                self._proc.stdin.close()
        try:
            self._proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
