"""CPU time and resident memory of a process, from Linux /proc (NaN or zero elsewhere).

CPU per operation holds on a shared, noisy machine where rates do not: every benchmark that
compares work reports it beside its rates.
"""

from __future__ import annotations

import os
from pathlib import Path


def cpu_s(pid: int | None) -> tuple[float, float]:
    """(own, reaped children's) user + system CPU seconds of a process so far."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0, 0.0
    tick = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / tick, (int(fields[13]) + int(fields[14])) / tick


def rss_mb(pid: int | None) -> float:
    """Resident set size in MB; NaN when the process is gone."""
    if pid is None:
        return float("nan")
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")
