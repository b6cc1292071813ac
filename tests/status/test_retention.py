"""The trigger log's retention: old entries that started no run go, accepted launches stay."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from hookrun.events import TriggerLogged
from hookrun.status.postgres import PostgresStore
from hookrun.status.retention import prune_trigger_log
from hookrun.status.sqlite import SqliteStore
from hookrun.status.store import SqlStore
from tests.integration.status_pg import new_database, postgres_server  # noqa: F401
from tests.status.conftest import Feeder
from tests.status.factories import launched, rejected

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def any_store(request, tmp_path) -> AsyncIterator[SqlStore]:
    if request.param == "sqlite":
        store: SqlStore = SqliteStore(tmp_path / "status.db")
    else:
        store = PostgresStore(new_database(request.getfixturevalue("postgres_server")))
    await store.open()
    yield store
    await store.close()


def at(event, moment: datetime):
    return event.model_copy(update={"occurred_at": moment})


async def entries(store: SqlStore, trigger_id: str = "tok") -> list[dict]:
    return (await store.trigger_log(trigger_id, None, 1000))["entries"]


async def test_retention_deletes_old_rejected_entries_and_keeps_accepted_ones(any_store):
    feed = Feeder(any_store)
    old_launch = at(launched(), NOW - 90 * DAY)
    duplicate = TriggerLogged(
        trigger_id="tok",
        outcome="duplicate",
        reason="redelivery of d-1",
        status_code=202,
        method="POST",
        run_id=old_launch.run_id,
    )
    await feed(
        [
            old_launch,
            at(rejected(reason="old"), NOW - 31 * DAY),
            at(duplicate, NOW - 40 * DAY),
            at(rejected(reason="recent"), NOW - 29 * DAY),
            at(launched(), NOW - DAY),
        ]
    )
    assert len(await entries(any_store)) == 5

    deleted = await prune_trigger_log(any_store, 30 * 86400, now=NOW)

    assert deleted == 2
    kept = await entries(any_store)
    assert sorted(e["outcome"] for e in kept) == ["accepted", "accepted", "rejected"]
    assert [e["reason"] for e in kept if e["outcome"] == "rejected"] == ["recent"]
    # The runs of the accepted entries are untouched.
    assert await any_store.run_info(old_launch.run_id) is not None


async def test_retention_deletes_in_chunks_until_nothing_old_is_left(any_store):
    feed = Feeder(any_store)
    await feed([at(rejected(reason=f"r{n}"), NOW - 60 * DAY) for n in range(23)])
    cutoff = "2026-11-01T00:00:00.000000Z"
    assert await any_store.prune_trigger_log(cutoff, chunk=5) == 23
    assert await entries(any_store) == []
    assert await any_store.prune_trigger_log(cutoff, chunk=5) == 0


async def test_a_sampled_summary_keeps_its_count(any_store):
    feed = Feeder(any_store)
    summary = rejected(reason="980 more rejected launches ...").model_copy(update={"count": 980})
    await feed([summary, rejected()])
    assert sorted(e["count"] for e in await entries(any_store)) == [1, 980]


async def test_a_store_made_before_the_count_column_gets_it_on_open(tmp_path):
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.execute(
        """CREATE TABLE trigger_log (
        entry_id TEXT PRIMARY KEY, trigger_id TEXT NOT NULL, at TEXT NOT NULL,
        outcome TEXT NOT NULL, reason TEXT, status_code INTEGER, method TEXT, remote_addr TEXT,
        content_length BIGINT, delivery_id TEXT, run_id TEXT, is_test INTEGER NOT NULL DEFAULT 0)"""
    )
    conn.execute(
        "INSERT INTO trigger_log (entry_id, trigger_id, at, outcome) VALUES"
        " ('e-1', 'tok', '2026-01-01T00:00:00.000000Z', 'rejected')"
    )
    conn.commit()
    conn.close()
    store = SqliteStore(path)
    await store.open()
    try:
        await Feeder(store)([rejected()])
        assert sorted(e["count"] for e in await entries(store)) == [1, 1]
    finally:
        await store.close()
