"""The system benchmark's search for the highest launch rate the system holds."""

from __future__ import annotations

import pytest

from bench import bench_system
from bench.bench_system import Step, find_held, held_and_failed


class Machine:
    """Holds any rate up to ``capacity``; records the rates offered and the recoveries asked."""

    def __init__(self, capacity: float, drains: bool = True) -> None:
        self.capacity = capacity
        self.drains = drains
        self.offered: list[float] = []
        self.recoveries = 0

    async def offer(self, rate: float) -> Step:
        self.offered.append(rate)
        return Step(rate, "" if rate <= self.capacity else "lag not drained")

    async def recover(self) -> bool:
        self.recoveries += 1
        return self.drains


@pytest.mark.parametrize(
    ("capacity", "drains", "offered", "held", "failed", "recoveries"),
    [
        # up while held, then once between the highest held and the lowest failed
        (130, True, [76, 106, 148, 125], 125, 148, 1),
        # a failed first step: down until one holds, then once between
        (40, True, [76, 54, 39, 46], 39, 46, 2),
        # a system that does not drain after a failed step ends the search there
        (100, False, [76, 106], 76, 106, 1),
    ],
    ids=["up-then-bisect", "down-then-bisect", "not-drained"],
)
async def test_the_search_offers_rates_in_steps_and_finds_the_highest_held(
    capacity: float,
    drains: bool,
    offered: list[float],
    held: float,
    failed: float,
    recoveries: int,
) -> None:
    machine = Machine(capacity, drains)
    steps = await find_held(machine.offer, machine.recover, 76, factor=1.4, max_steps=6)
    assert machine.offered == offered
    held_step, failed_step = held_and_failed(steps)
    assert held_step is not None and held_step.rate == held
    assert failed_step is not None and failed_step.rate == failed
    assert failed_step.why == "lag not drained"
    assert machine.recoveries == recoveries


async def test_the_search_stops_after_its_steps_even_if_every_rate_held() -> None:
    machine = Machine(capacity=10_000)
    steps = await find_held(machine.offer, machine.recover, 50, factor=1.5, max_steps=4)
    assert machine.offered == [50, 75, 112, 168]
    assert held_and_failed(steps) == (steps[-1], None)


async def test_nothing_held_down_to_one_launch_a_second() -> None:
    machine = Machine(capacity=0)
    steps = await find_held(machine.offer, machine.recover, 3, factor=2, max_steps=6)
    assert machine.offered == [3, 2, 1]
    held, failed = held_and_failed(steps)
    assert held is None and failed is not None and failed.rate == 1


@pytest.mark.kafka
@pytest.mark.e2e
async def test_the_system_row_names_the_rate_held_the_failure_and_the_runner_alone(
    kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # short steps, two of them: what the row says, not what this machine holds
    monkeypatch.setenv("BENCH_SYSTEM_STEP_S", "2")
    monkeypatch.setattr(bench_system, "MAX_STEPS", 2)
    rows = await bench_system.run(kafka_bootstrap, seconds=1)

    [row] = [r for r in rows if r["name"].startswith("system: highest launches/s held 2 s")]
    assert row["baseline_name"] == "runner alone, no-op runs/s, same run"
    assert row["baseline_value"] > 0
    steps = row["steps"]
    assert len(steps) == 2
    assert steps[1]["rate"] == (
        round(steps[0]["rate"] * bench_system.FACTOR)
        if steps[0]["why"] == "held"
        else round(steps[0]["rate"] / bench_system.FACTOR)
    )
    for step in steps:
        assert step["answered_202"] + step["other_answers"] + step["connection_errors"] > 0
        assert step["load_average_1m"] >= 0
    held = [s["rate"] for s in steps if s["why"] == "held"]
    assert row["value"] == max(held, default=0)
    if any(s["why"] != "held" for s in steps):
        assert "failed at" in row["name"]
    else:
        assert "none failed up to" in row["name"]
