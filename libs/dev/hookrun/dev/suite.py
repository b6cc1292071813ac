"""``make test``: the unit tests and the tests against real parts, as two pytest runs at once.

The tests against a real broker, services, PostgreSQL and a browser (``-m "kafka or e2e"``)
spend most of their time waiting for those; the unit and fuzz tests keep a core busy. Side by
side they fit the suite's budget on a 2-core machine (decision 0061). The unit run's report is
printed after the other's; the exit status is the worse of the two. With ``-m`` among the
arguments, or ``HOOKRUN_TEST_SERIAL=1``, it is one plain pytest run; ``--unit`` runs only the
unit half (``make test-quick``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

UNIT = "not kafka and not e2e"
REAL = "kafka or e2e"
#: pytest's "no tests collected": a -k that selects only the other half's tests.
NO_TESTS = 5


def main(argv: list[str]) -> int:
    pytest = [sys.executable, "-m", "pytest"]
    if "--unit" in argv:
        rest = [arg for arg in argv if arg != "--unit"]
        return subprocess.run([*pytest, "-m", UNIT, *rest]).returncode
    if "-m" in argv or os.environ.get("HOOKRUN_TEST_SERIAL") == "1":
        return subprocess.run([*pytest, *argv]).returncode
    with tempfile.TemporaryFile("w+") as unit_report:
        # The unit half stays off pytest's cache: two runs writing it at once lose entries.
        unit = subprocess.Popen(
            [*pytest, "-m", UNIT, "-p", "no:cacheprovider", *argv],
            stdout=unit_report,
            stderr=subprocess.STDOUT,
        )
        try:
            real = subprocess.run([*pytest, "-m", REAL, *argv]).returncode
        finally:
            unit_code = unit.wait()
        unit_report.seek(0)
        print(f"\n---- the unit tests (pytest -m {UNIT!r}), run alongside ----", flush=True)
        sys.stdout.write(unit_report.read())
    codes = [real, unit_code]
    if all(code == NO_TESTS for code in codes):
        return NO_TESTS
    return max(code for code in codes if code != NO_TESTS)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
