"""The rebuild's fast path (replay.applied) against decode + fold: the same ops, the same rows."""

from __future__ import annotations

import gc
import itertools
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, NamedTuple

import orjson
import pytest
from aiokafka import TopicPartition

from hookrun.events import (
    ActionCompleted,
    DeliveryAttempted,
    ErrorDetail,
    Event,
    ExecutionFinished,
    ExecutionHeartbeat,
    ExecutionStarted,
    PipelineNodeSkipped,
    RedeliveryRequested,
    RunCancelRequested,
    RunFinished,
    RunStatus,
    TriggerLogged,
    encode,
    topics,
)
from hookrun.events.limits import MAX_TEXT_CHARS, clip
from hookrun.status import replay
from hookrun.status.projector import _prepare
from hookrun.status.rebuild import _no_cyclic_collections, _shares
from hookrun.status.sqlite import SqliteStore, bulk_sql
from hookrun.status.statements import INSERT_EVENT
from hookrun.status.store import TABLES, grouped
from tests.status.factories import T0, launched, rejected, run_events

OK, FAIL = RunStatus.SUCCESS, RunStatus.FAILURE
PARTITIONS = 3


class Record(NamedTuple):
    """What the projector reads of an aiokafka ConsumerRecord."""

    value: bytes | None
    headers: tuple[tuple[str, Any], ...]
    offset: int


def varied_events() -> list[Event]:
    """Every event type the status service folds, with optional fields set and unset."""
    events: list[Event] = []
    for i in range(12):
        run = launched(
            "tok" if i % 3 else "gh",
            is_test=i % 4 == 1,
            delivery_id=f"d-{i}" if i % 2 else None,
            account="acme" if i % 5 == 0 else None,
            body=b'{"i": %d, "text": "caf\xc3\xa9 \\"q\\""}' % i,
        )
        outcomes = [[OK], [FAIL], [OK, FAIL], [OK, OK]][i % 4]
        run_evs = run_events(
            run, outcomes, finish=i % 5 != 4, pipeline=i % 3 == 0, deliveries=i % 3
        )
        events += [run, *run_evs]
        execution = f"{run.run_id}-x0"
        events += [
            ExecutionHeartbeat(
                run_id=run.run_id,
                execution_id=execution,
                runner_id="r2",
                lease_until=datetime.now(UTC) + timedelta(seconds=30),
            ),
            ExecutionStarted(
                run_id=run.run_id, execution_id=execution, runner_id="r2", lease_until=T0
            ),
            ExecutionFinished(
                run_id=run.run_id,
                execution_id=execution,
                status=RunStatus.ABORTED,
                completed_at=datetime(2025, 1, 2, 3, 4, 5, 678, tzinfo=UTC),
                output={"n": i, "nested": [1, {"x": None}]},
                error="runner lost",
            ),
            ActionCompleted(
                run_id=run.run_id,
                action_index=7,
                action="copy_pipeline",
                status=RunStatus.CANCELED,
                error="canceled",
            ),
            DeliveryAttempted(
                run_id=run.run_id,
                message_id="m-ok",
                subscription_id="sub-2",
                url="https://example.com/ok",
                attempt=1,
                outcome="succeeded" if i % 2 else "gone",
                status_code=200 if i % 2 else None,
            ),
        ]
        if i % 4 == 2:
            events += [
                RunCancelRequested(run_id=run.run_id),
                RedeliveryRequested(run_id=run.run_id, subscription_id="sub-1"),
                PipelineNodeSkipped(
                    run_id=run.run_id, pipeline_id=f"{run.run_id}-p", node="b", reason="a failed"
                ),
                RunFinished(
                    run_id=run.run_id,
                    trigger_id=run.trigger_id,
                    config_version="v1",
                    status=RunStatus.TIMED_OUT,
                    started_at=T0,
                    completed_at=datetime(2025, 1, 1, 2, 0, tzinfo=timezone(timedelta(hours=2))),
                    duration_ms=1,
                    execution_count=2,
                    invocation={"id": run.run_id, "timestamp": T0},
                    error=ErrorDetail(message="timed out", name="Timeout"),
                    failed_execution_id=execution,
                ),
            ]
        if i % 6 == 5:
            # a producer in another time zone: not the encoder's UTC form, the full path
            events.append(
                RunCancelRequested(
                    run_id=run.run_id,
                    occurred_at=datetime(2025, 3, 1, 12, tzinfo=timezone(timedelta(hours=-5))),
                )
            )
    events += [
        rejected(),
        rejected("nope", reason="unknown trigger"),
        TriggerLogged(
            trigger_id="tok",
            outcome="duplicate",
            reason="delivery d-1 already started a run",
            status_code=200,
            method="POST",
            remote_addr="10.0.0.1",
            content_length=12,
            delivery_id="d-1",
            run_id="some-run",
        ),
        *(
            TriggerLogged(
                trigger_id="tok",
                outcome=outcome,
                reason=reason,
                status_code=status,
                method="POST",
                remote_addr="10.0.0.2",
            )
            for outcome, reason, status in (
                ("filtered", "filter[0] did not match: payload.ref equals 'main'", 200),
                ("rate_limited", "over 10 launches per 60 s", 429),
            )
        ),
    ]
    return events


def as_batches(events: list[Event]) -> list[dict[TopicPartition, list[Record]]]:
    """The events as the consumer would fetch them: by partition, in several batches."""
    by_partition: dict[TopicPartition, list[Record]] = {}
    for event in events:
        r = encode(event)
        tp = TopicPartition(r.topic, hash(r.key) % PARTITIONS)
        records = by_partition.setdefault(tp, [])
        records.append(Record(r.value, tuple(r.headers), len(records)))
    batches: list[dict[TopicPartition, list[Record]]] = [{}, {}, {}]
    for tp, records in by_partition.items():
        third = len(records) // 3 + 1
        for n, batch in enumerate(batches):
            if records[n * third : (n + 1) * third]:
                batch[tp] = records[n * third : (n + 1) * third]
    return batches


async def table_rows(store: SqliteStore) -> dict[str, list[str]]:
    return {t: sorted(map(repr, await store._rows(f"SELECT * FROM {t}"))) for t in TABLES}


def test_the_fast_path_makes_the_same_items_as_decode_and_fold():
    for batch in as_batches(varied_events()):
        assert _prepare(batch, trusted=True) == _prepare(batch, trusted=False)


def test_every_frequent_event_of_a_run_takes_the_fast_path():
    # the benchmark's runs, a rejected launch and heartbeats: none may fall back silently
    run = launched(delivery_id="d")
    events = [
        run,
        *run_events(run, [OK, FAIL], deliveries=2),
        rejected(),
        ExecutionHeartbeat(
            run_id=run.run_id, execution_id="x", runner_id="r", lease_until=datetime.now(UTC)
        ),
    ]
    for batch in as_batches(events):
        for tp, records in batch.items():
            for record in records:
                assert replay.applied(tp.topic, tp.partition, record) is not None


async def test_a_rebuilt_store_has_the_rows_of_the_live_projection(tmp_path):
    batches = as_batches(varied_events())
    live = SqliteStore(tmp_path / "live.db")
    await live.open()
    for batch in batches:
        for items in _prepare(batch)[0]:
            await live.apply([items])  # one event per transaction, as a slow consumer would
    rebuilt = SqliteStore(tmp_path / "status.db.rebuild", scratch=True)
    await rebuilt.open()
    for batch in batches:
        await rebuilt.apply(_prepare(batch, trusted=True)[0])
    rebuilt.finish_rebuild(tmp_path / "status.db")
    swapped = SqliteStore(tmp_path / "status.db")
    await swapped.open()
    try:
        expected = await table_rows(live)
        assert expected["runs"] and expected["deliveries"] and expected["trigger_log"]
        assert await table_rows(swapped) == expected
        indexes = "SELECT name FROM sqlite_master WHERE type = 'index' ORDER BY name"
        assert await swapped._rows(indexes) == await live._rows(indexes)
    finally:
        await live.close()
        await swapped.close()


async def test_a_rebuild_split_by_partition_and_merged_has_the_rows_of_the_live_projection(
    tmp_path,
):
    # what a parallel rebuild does: each share of the partitions into its own file, then one
    # file holding them all
    batches = as_batches(varied_events())
    live = SqliteStore(tmp_path / "live.db")
    await live.open()
    for batch in batches:
        await live.apply(_prepare(batch)[0])
    parts = sorted({tp for batch in batches for tp in batch})
    assert len(parts) >= 3
    shares = [parts[0::3], parts[1::3], parts[2::3]]
    files = [tmp_path / f"status.db.rebuild{i or ''}" for i in range(3)]
    stores = [SqliteStore(file, scratch=True) for file in files]
    for store, share in zip(stores, shares, strict=True):
        await store.open()
        for batch in batches:
            mine = {tp: records for tp, records in batch.items() if tp in share}
            await store.apply(_prepare(mine, trusted=True)[0])
    for store in stores[1:]:
        await store.close()
    stores[0].merge_rebuilt(files[1:])
    stores[0].finish_rebuild(tmp_path / "status.db")
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "live.db",
        "live.db-shm",
        "live.db-wal",
        "status.db",
    ]
    swapped = SqliteStore(tmp_path / "status.db")
    await swapped.open()
    try:
        expected = await table_rows(live)
        assert await table_rows(swapped) == expected
        assert len(expected["offsets"]) == len(parts)
    finally:
        await live.close()
        await swapped.close()


def test_a_rebuild_deals_the_partitions_out_by_their_records():
    ends = {TopicPartition("runs", p): n for p, n in enumerate([900, 100, 500, 480, 0, 20])}
    ends[TopicPartition("triggers", 0)] = 60
    two = _shares(ends, 2)
    assert [sum(share.values()) for share in two] == [
        1020,
        1040,
    ]  # largest first, each to the lightest share
    assert sorted(tp for share in two for tp in share if ends[tp]) == sorted(
        tp for tp in ends if ends[tp]
    )
    # never a process without records, never none at all
    assert len(_shares(ends, 16)) == 6
    assert _shares({TopicPartition("runs", 0): 0}, 4) == [{TopicPartition("runs", 0): 0}]
    assert _shares(ends, 1) == [ends]


def test_a_replay_turns_the_cyclic_collector_off_and_back_to_how_it_was():
    assert gc.isenabled()
    with _no_cyclic_collections():
        assert not gc.isenabled()
    assert gc.isenabled()
    gc.disable()
    try:
        with _no_cyclic_collections():
            pass
        assert not gc.isenabled()  # the caller's choice stands
    finally:
        gc.enable()
    with pytest.raises(RuntimeError), _no_cyclic_collections():
        raise RuntimeError("a failed replay")
    assert gc.isenabled()


def test_every_statement_of_the_projection_has_a_bulk_form():
    sqls = {
        op.sql for batch in as_batches(varied_events()) for a in _prepare(batch)[0] for op in a.ops
    }
    assert len(sqls) > 15
    for sql in sqls:
        assert bulk_sql(sql, 3) is not None, sql


async def test_a_rebuild_writes_a_batch_in_a_few_statements_leaving_the_live_rows(tmp_path):
    # runs without actions too: the status recompute counts zero of them
    idle, pending = launched(run_id="r-idle"), launched(run_id="r-pending")
    extra = [idle, *run_events(idle, []), pending, run_events(pending, [OK], finish=False)[0]]
    one_batch: dict[TopicPartition, list[Record]] = {}
    for batch in as_batches(varied_events() + extra):
        for tp, records in batch.items():
            one_batch.setdefault(tp, []).extend(records)
    live = SqliteStore(tmp_path / "live.db")
    await live.open()
    items = _prepare(one_batch)[0]
    for item in items:
        await live.apply([item])
    rebuilt = SqliteStore(tmp_path / "status.db.rebuild", scratch=True)
    await rebuilt.open()
    executed: list[str] = []
    assert rebuilt._writer is not None
    rebuilt._writer.set_trace_callback(executed.append)
    fast = _prepare(one_batch, trusted=True)[0]
    await rebuilt.apply(fast, grouped=grouped(fast))
    rebuilt._writer.set_trace_callback(None)
    try:
        assert await table_rows(rebuilt) == await table_rows(live)
        rows = sum(len(a.ops) for a in items)
        # a group's rows go in statements of 2**k rows (each prepared once): at most a few
        # per group, a fraction of one per row
        assert rows > 400 and len(executed) < rows / 4
    finally:
        await live.close()
        await rebuilt.close()


def _record(event: Event, *, data: dict[str, Any] | None = None, **headers: Any) -> Record:
    r = encode(event)
    hs = dict(r.headers)
    hs.update(headers)
    value = r.value if data is None else orjson.dumps({**orjson.loads(r.value), **data})
    return Record(value, tuple(hs.items()), 0)


_RUN = launched(run_id="r-odd")
_STARTED, _CREATED, _EX_STARTED, _FINISHED, _ACTION, _RUN_FINISHED = run_events(_RUN, [OK])
ODD = {
    "an int sent as text": _record(_STARTED, data={"action_count": "2"}),
    "an int sent as a float": _record(_ACTION, data={"action_index": 0.0}),
    "a bool sent as an int": _record(_RUN, data={"is_test": 1}),
    "a bool as an int field": _record(_EX_STARTED, data={"pid": True}),
    "a missing required field": _record(_CREATED, data={"step": None}),
    "a status out of the enum": _record(_FINISHED, data={"status": "success"}),
    "a time with an offset": _record(_STARTED, ce_time=b"2025-01-01T02:00:00+02:00"),
    "a time with milliseconds": _record(_STARTED, ce_time=b"2025-01-01T00:00:00.123Z"),
    "a time with a space": _record(_STARTED, ce_time=b"2025-01-01 00:00:00.123456Z"),
    "a date that does not exist": _record(_STARTED, ce_time=b"2025-02-30T00:00:00.000000Z"),
    "a data time in another form": _record(_RUN_FINISHED, data={"started_at": 1735689600}),
    "an older schema version": _record(
        _STARTED, ce_dataschema=b"urn:hookrun:schema:hookrun.run.started:v0"
    ),
    "a newer schema version": _record(
        _STARTED, ce_dataschema=b"urn:hookrun:schema:hookrun.run.started:v2"
    ),
    "a null header": _record(_STARTED, ce_subject=None),
    "a header that is not UTF-8": _record(_STARTED, traceparent=b"\xff"),
    "another spec version": _record(_STARTED, ce_specversion=b"0.3"),
    "an unknown type": _record(_STARTED, ce_type=b"hookrun.run.teleported"),
    "a type without a fast fold": _record(
        PipelineNodeSkipped(run_id="r", pipeline_id="p", node="n", reason="x")
    ),
    "a value that is not JSON": Record(b"\x00garbage", _record(_STARTED).headers, 0),
    "a JSON array": Record(b"[1, 2]", _record(_STARTED).headers, 0),
    "no value": Record(None, _record(_STARTED).headers, 0),
}


@pytest.mark.parametrize("record", ODD.values(), ids=ODD.keys())
def test_a_record_in_another_shape_takes_the_full_path(record):
    assert replay.applied(topics.RUNS, 0, record) is None
    batch = {TopicPartition(topics.RUNS, 0): [record]}
    assert _prepare(batch, trusted=True) == _prepare(batch, trusted=False)


def test_headers_unlike_the_encoders_make_the_same_items():
    record = _record(_STARTED, traceparent=b"00-abc-01")
    shuffled = Record(record.value, tuple(reversed(record.headers)), 1)
    escaped = _record(_STARTED, ce_source=b'a "quoted" \\ source\t')
    accented = _record(_STARTED, ce_source="caf\u00e9".encode())
    for r in (record, shuffled, escaped, accented):
        assert replay.applied(topics.RUNS, 0, r) is not None
        batch = {TopicPartition(topics.RUNS, 0): [r]}
        assert _prepare(batch, trusted=True) == _prepare(batch, trusted=False)


LONG = "x" * (MAX_TEXT_CHARS + 100)
OVER_BOUND = {
    "an execution's output tails and error": (
        topics.RUNS,
        _record(_FINISHED, data={"stdout_tail": LONG, "stderr_tail": LONG, "error": LONG}),
    ),
    "an action's error": (topics.RUNS, _record(_ACTION, data={"error": LONG})),
    "a run's error message": (
        topics.RUNS,
        _record(_RUN_FINISHED, data={"error": {"message": LONG}}),
    ),
    "a rejected launch's reason": (topics.TRIGGERS, _record(rejected(), data={"reason": LONG})),
}


@pytest.mark.parametrize(("topic", "record"), OVER_BOUND.values(), ids=OVER_BOUND.keys())
def test_a_text_over_its_bound_is_cut_as_the_live_projection_cuts_it(topic, record):
    # written by a producer that did not cut it: decoding cuts it, and so must the fast path
    batch = {TopicPartition(topic, 0): [record]}
    fast = _prepare(batch, trusted=True)
    assert replay.applied(topic, 0, record) is not None
    assert fast == _prepare(batch, trusted=False)
    stored = [p for item in fast[0] for op in item.ops if op.sql != INSERT_EVENT for p in op.params]
    assert clip(LONG) in stored and LONG not in stored


def test_offsets_count_every_record_of_a_batch():
    records = [_record(e) for e in (_RUN, _STARTED, _CREATED)]
    records = [r._replace(offset=n) for n, r in zip(itertools.count(5), records, strict=False)]
    items, invalid = _prepare({TopicPartition(topics.RUNS, 2): records}, trusted=True)
    assert [(i.partition, i.offset) for i in items] == [(2, 5), (2, 6), (2, 7)]
    assert invalid == []


@pytest.mark.parametrize("trusted", [True, False], ids=["rebuild", "live"])
def test_a_foreign_value_too_deep_to_store_is_dead_lettered_not_raised(trusted):
    # decodes (orjson reads 1,024 levels) but cannot be written back as JSON (254 levels)
    value = orjson.dumps({**orjson.loads(_record(_FINISHED).value), "output": "DEEP"})
    deep = Record(value.replace(b'"DEEP"', b"[" * 300 + b"]" * 300), _record(_FINISHED).headers, 7)
    fine = Record(_record(_STARTED).value, _record(_STARTED).headers, 8)
    items, invalid = _prepare({TopicPartition(topics.RUNS, 0): [deep, fine]}, trusted=trusted)
    [(_, record, reason)] = invalid
    assert record is deep and "cannot be projected" in reason
    assert [(i.offset, bool(i.ops)) for i in items] == [(7, False), (8, True)]
