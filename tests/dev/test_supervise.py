"""`make run` restarts a service that exits on its own, with a doubling delay."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from hookrun.dev.procs import ServiceProcess
from hookrun.dev.run import Restarts, supervise


def test_the_delay_doubles_up_to_the_cap_and_starts_over_after_a_stable_run() -> None:
    policy = Restarts(first_s=1, max_s=5, stable_s=60)
    assert [policy.after_exit("runner", up_s=2) for _ in range(5)] == [1, 2, 4, 5, 5]
    assert policy.after_exit("runner", up_s=61) == 1
    assert policy.after_exit("status", up_s=0) == 1  # per service


def test_a_crashing_service_is_restarted_again_and_again(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # `python -m` of a module that does not exist: exits 1 at once, every time
    crashing = ServiceProcess("crashing", "hookrun.dev.no_such_module", {}, tmp_path)
    crashing.start()
    until = time.monotonic() + 2.0
    try:
        supervise(
            [crashing],
            lambda: time.monotonic() < until,
            Restarts(first_s=0.1, max_s=0.4),
            tick_s=0.02,
        )
    finally:
        crashing.stop()
    out = capsys.readouterr().out
    assert "!! crashing exited (1); restarting in 0.1 s" in out
    assert "No module named hookrun.dev.no_such_module" in out  # the log's tail is shown
    restarts = out.count("crashing  restarted, pid")
    # delays 0.1, 0.2, 0.4, 0.4, ... within 2 s: at least four restarts, never a tight loop
    assert 4 <= restarts <= 8, out
