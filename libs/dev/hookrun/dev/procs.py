"""Starts hookrun's services as child processes, waits until they answer, and stops them by pid."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import httpx


def parent_death_signal() -> Callable[[], None] | None:
    """Return a pre-exec hook asking Linux to SIGTERM the child when its parent dies."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        # Resolved before the fork: the child should only make the one system call.
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1

    def hook() -> None:
        prctl(pr_set_pdeathsig, signal.SIGTERM)

    return hook


class ServiceProcess:
    """One service (``python -m <module>``) in its own process group, logging to a file."""

    def __init__(
        self,
        name: str,
        module: str,
        env: Mapping[str, str],
        log_dir: Path,
        *,
        health_url: str | None = None,
        wrapper: Sequence[str] = (),
    ) -> None:
        """``wrapper``: argv put before ``python -m <module>`` (a sandbox, say)."""
        self.name = name
        self.module = module
        self.env = dict(env)
        self.log_path = Path(log_dir) / f"{name}.log"
        self.health_url = health_url
        self.wrapper = list(wrapper)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def start(self, *, wait_s: float = 30.0) -> ServiceProcess:
        """Start the process; when it has a health URL (and ``wait_s`` > 0), return once it
        answers 200."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        env = {**os.environ, **self.env, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [*self.wrapper, sys.executable, "-m", self.module],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own group: a kill reaches the executions it spawned too
        )
        log.close()
        if self.health_url and wait_s > 0:
            self.wait_healthy(wait_s)
        return self

    def wait_healthy(self, wait_s: float = 30.0, *, ready_key: str | None = "kafka") -> None:
        """Poll the health URL until it answers 200 (and ``ready_key`` is true)."""
        assert self.health_url
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.proc.returncode}:\n{self.tail()}"
                )
            try:
                r = httpx.get(self.health_url, timeout=1.0)
                if r.status_code == 200 and (ready_key is None or r.json().get(ready_key, True)):
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"{self.name} did not become healthy in {wait_s}s:\n{self.tail()}")

    def stop(self, timeout_s: float = 15.0) -> None:
        """SIGTERM the process group, then SIGKILL it if it is still there after ``timeout_s``."""
        self._signal(signal.SIGTERM)
        if self.proc is not None:
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                self.proc.wait(5)
        self.proc = None

    def kill(self) -> None:
        """SIGKILL the process group at once (crash tests)."""
        self._signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(5)
        self.proc = None

    def _signal(self, sig: signal.Signals) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass

    def tail(self, lines: int = 40) -> str:
        """The last lines of the service's log."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"
