"""`make test`'s two halves: every test runs once, and a failure in either fails the run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

TESTS = """
import pytest

def test_unit():
    pass

@pytest.mark.kafka
def test_real():
    pass

@pytest.mark.e2e
def test_whole():
    assert {fail}
"""


def suite(tmp_path: Path, *args: str, fail: bool) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_both.py").write_text(TESTS.format(fail=not fail))
    (tmp_path / "pytest.ini").write_text("[pytest]\nmarkers =\n  kafka\n  e2e\n")
    return subprocess.run(
        [sys.executable, "-m", "hookrun.dev.suite", "-q", "-p", "no:cacheprovider", *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_each_test_runs_once_and_a_failure_in_either_half_fails_the_run(tmp_path: Path) -> None:
    done = suite(tmp_path, fail=True)
    assert done.returncode == 1, done.stdout + done.stderr
    real, unit = done.stdout.split("---- the unit tests")
    assert "1 failed, 1 passed, 1 deselected" in real
    assert "1 passed, 2 deselected" in unit


def test_unit_runs_only_the_unit_half(tmp_path: Path) -> None:
    done = suite(tmp_path, "--unit", fail=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed, 2 deselected" in done.stdout
