"""The store queries behind the live run feed and the dashboard's trigger page, on both databases."""

from __future__ import annotations

from hookrun.events import RunStarted, topics
from tests.status.conftest import Feeder
from tests.status.factories import launched, rejected
from tests.status.test_retention import any_store, postgres_server  # noqa: F401 (fixtures)

RUNS = topics.RUNS


async def test_changed_runs_are_those_with_events_past_the_position(any_store):  # noqa: F811
    feed = Feeder(any_store)
    first, second = launched("tok"), launched("other")
    await feed([first, second])

    runs, reached = await any_store.runs_changed(RUNS, {})
    assert [r["run_id"] for r in runs] == [first.run_id, second.run_id]
    assert reached == await any_store.offsets(RUNS)
    assert await any_store.runs_changed(RUNS, reached) == ([], reached)

    # the first run changes: only it comes out, in its new state, and last changed last
    started = RunStarted(run_id=first.run_id, trigger_id="tok", runner_id="r1", action_count=1)
    third = launched("tok")
    await feed([started, third])
    runs, later = await any_store.runs_changed(RUNS, reached)
    assert [r["run_id"] for r in runs] == [first.run_id, third.run_id]
    assert runs[0]["action_count"] == 1
    assert later[0] == reached[0] + 2


async def test_launch_counts_group_the_trigger_log_by_outcome_since_a_time(any_store):  # noqa: F811
    feed = Feeder(any_store)
    await feed([launched("tok"), launched("tok"), rejected("tok"), rejected("other")])
    rows = await any_store.launch_counts("2000-01-01T00:00:00.000000Z")
    counts = {(r["trigger_id"], r["outcome"]): int(r["count"]) for r in rows}
    assert counts == {("tok", "accepted"): 2, ("tok", "rejected"): 1, ("other", "rejected"): 1}
    assert await any_store.launch_counts("2999-01-01T00:00:00.000000Z") == []
