"""Chaos, short: launches at a steady rate while every service is killed -9 and the broker restarts.

The long version is `make chaos` (bench/chaos.py, 5,000 launches; `make chaos BROKERS=3` against
a three-broker cluster). Each test starts its own broker or cluster on free ports (the session
broker is shared, it must not be restarted) and the whole system as `make run` starts it, and
asserts the requirements of issues 6 and 16 on the report's counts.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.chaos import Plan, Report, run

pytestmark = pytest.mark.e2e

# 20 s of load at 15/s: enough room for five faults 3.3 s apart on a busy 2-core machine. A
# 10 s runner lease keeps the recovery of a killed execution short; the recovery window is
# generous because restarts take several seconds each there.
SHORT = {"launches": 300, "rate": 15.0, "recovery_s": 120.0, "lease_s": 10.0}


def assert_requirements(report: Report, broker_fault: str = "restart broker") -> None:
    print(report.table())  # shown by pytest on failure (and with -s)
    assert report.accepted_202 > 0, report.table()
    assert report.faults and all(f["ok"] for f in report.faults), report.table()
    assert {f["what"] for f in report.faults} == {
        "kill gateway",
        "kill runner",
        "kill notifier",
        "kill status",
        broker_fault,
    }
    # every acknowledged run terminal in run info and notified at least once; none pending
    assert report.pending == 0, report.table()
    assert report.terminal_in_run_info == report.accepted_202, report.table()
    assert report.not_notified == 0, report.table()
    assert report.notified == report.accepted_202, report.table()
    # exactly one terminal status per run (a repeated RunFinished of the same status is allowed)
    assert report.runs_without_run_finished == 0, report.table()
    assert report.conflicting_terminal_status == 0, report.table()
    assert report.unsigned_deliveries == 0, report.table()
    assert report.passed, report.table()


def test_every_acknowledged_run_finishes_once_and_is_notified_despite_kills_and_poison(
    tmp_path: Path,
) -> None:
    # One round of poisonous launches mid-load: a body nested too deep is refused, outputs no
    # event can carry fail their runs, and nothing else is held up by them.
    report = run(Plan(**SHORT, scale=1, poison=1), tmp_path)
    assert_requirements(report)
    assert report.poison_answers["body nested 300 deep"] == {"400": 1}, report.table()
    # One terminal status each (a repeated RunFinished of it is allowed, as for every run):
    # FAILURE, or ABORTED where a kill of the runner caught the execution under way.
    assert set(report.poison_outcomes) == {
        "output over the size limit",
        "output nested 300 deep",
        "outputs past a Kafka message",
    }, report.table()
    for outcomes in report.poison_outcomes.values():
        assert len(outcomes) == 1 and set(outcomes) <= {"FAILURE", "ABORTED"}, report.table()


def test_two_instances_per_consumer_keep_the_guarantees_through_rebalances(
    tmp_path: Path,
) -> None:
    # The killed runner, status and notifier instance stays down 12 s (longer than the runner's
    # 10 s session timeout): its partitions move to the survivor, then back when it returns.
    assert_requirements(run(Plan(**SHORT, scale=2), tmp_path))


@pytest.mark.cluster
def test_a_three_broker_cluster_keeps_the_guarantees_when_the_run_topic_leader_is_killed(
    tmp_path: Path,
) -> None:
    # Three brokers, every topic with three copies and two in sync; instead of the clean
    # restart, the node leading the most hookrun.runs partitions is killed -9 and restarted.
    report = run(Plan(**SHORT, scale=1, brokers=3), tmp_path)
    assert_requirements(report, broker_fault="kill -9 runs leader")
    assert "leader of" in report.faults[-1]["detail"], report.table()
