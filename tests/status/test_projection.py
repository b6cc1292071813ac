"""The projection fold into a real SQLite store: statuses, result entries, idempotence, offsets."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson

from hookrun.events import (
    DeliveryAttempted,
    ExecutionCreated,
    ExecutionFinished,
    PipelineCreated,
    RunStatus,
    decode,
    encode,
    topics,
)
from hookrun.status.projection import Position, fold
from hookrun.status.store import Applied, RunFilter
from tests.status.factories import canceled, launched, rejected, run_events

OK, FAIL = RunStatus.SUCCESS, RunStatus.FAILURE


class TestRunInfoStatus:
    async def test_a_launched_run_is_pending_with_no_results(self, store, feed):
        run = launched()
        await feed([run])
        assert await store.run_info(run.run_id) == {
            "trigger_id": "tok",
            "status": "pending",
            "result": [],
        }

    async def test_every_action_succeeded_is_completed(self, store, feed):
        run = launched()
        await feed([run, *run_events(run, [OK, OK])])
        assert (await store.run_info(run.run_id))["status"] == "completed"

    async def test_every_action_failed_is_error(self, store, feed):
        run = launched()
        await feed([run, *run_events(run, [FAIL, FAIL])])
        assert (await store.run_info(run.run_id))["status"] == "error"

    async def test_some_actions_failed_is_complete_with_error(self, store, feed):
        run = launched()
        await feed([run, *run_events(run, [OK, FAIL])])
        assert (await store.run_info(run.run_id))["status"] == "complete_with_error"

    async def test_a_run_stays_pending_until_its_last_action_completes(self, store, feed):
        run = launched()
        events = run_events(run, [OK, OK], finish=False)
        await feed([run, *events[:-1]])
        assert (await store.run_info(run.run_id))["status"] == "pending"
        await feed(events[-1:])
        assert (await store.run_info(run.run_id))["status"] == "completed"

    async def test_a_canceled_run_with_one_success_is_complete_with_error(self, store, feed):
        run = launched()
        events = run_events(run, [OK, OK])
        finished = events[-1].model_copy(update={"status": RunStatus.CANCELED})
        # the second action never completed: drop its ActionCompleted
        await feed([run, *events[:5], finished])
        assert (await store.run_info(run.run_id))["status"] == "complete_with_error"

    async def test_result_entries_appear_as_objects_are_created(self, store, feed):
        run = launched()
        await feed(
            [
                run,
                ExecutionCreated(run_id=run.run_id, execution_id="x1", action_index=0, step="noop"),
                PipelineCreated(
                    run_id=run.run_id,
                    pipeline_id="p1",
                    pipeline_name="Nightly",
                    action_index=1,
                    nodes={"a": "noop"},
                ),
                # a pipeline's node is not a result entry of its own
                ExecutionCreated(
                    run_id=run.run_id,
                    execution_id="x2",
                    action_index=1,
                    step="noop",
                    pipeline_id="p1",
                    node="a",
                ),
                PipelineCreated(
                    run_id=run.run_id,
                    pipeline_id="p2",
                    pipeline_name="Nightly",
                    action_index=2,
                    nodes={"a": "noop"},
                    source_pipeline_id="p1",
                ),
            ]
        )
        assert (await store.run_info(run.run_id))["result"] == [
            {"action": "run_execution", "execution_step": "noop", "execution_id": "x1"},
            {"action": "run_pipeline", "pipeline_name": "Nightly", "pipeline_id": "p1"},
            {"action": "copy_pipeline", "source_pipeline_id": "p1", "pipeline_id": "p2"},
        ]


class TestLiveFold:
    def test_a_field_no_rule_stores_is_not_serialised_on_the_way(self):
        # a run's invocation payload nested deeper than orjson and pydantic serialise (254
        # levels) still decodes; the projection stores none of it and must fold the event
        run = launched()
        record = encode(run_events(run, [OK])[-1])
        data = orjson.loads(record.value)
        data["invocation"]["payload"] = None
        deep = b'"x"'
        for _ in range(300):
            deep = b"[" + deep + b"]"
        value = orjson.dumps(data).replace(b'"payload":null', b'"payload":' + deep)
        at = Position(topics.RUNS, 0, 7, "{}")
        expected = fold(decode(orjson.dumps(data), record.headers), at)
        assert len(expected) == 3
        assert fold(decode(value, record.headers), at) == expected


class TestIdempotence:
    async def test_a_replayed_batch_is_skipped_by_its_offsets(self, store, feed):
        run = launched()
        await feed([run, *run_events(run, [OK], deliveries=2)])
        before = await store.run_detail(run.run_id)
        feed.offsets = iter(range(100))  # the same offsets again: a redelivery after a crash
        await feed([run, *run_events(run, [OK], deliveries=2)])
        assert await store.run_detail(run.run_id) == before
        assert (
            len(await store.run_events(run.run_id)) == len(run_events(run, [OK], deliveries=2)) + 1
        )

    async def test_a_batch_past_the_stored_offset_is_refused_as_a_gap(self, store):
        result = await store.apply([Applied(topics.RUNS, 0, 5, ())])
        assert result.gaps == {(topics.RUNS, 0): 0}
        assert await store.next_offset(topics.RUNS, 0) == 0
        # after a seek back to 0 the log really starts at 5 (retention): accepted
        result = await store.apply([Applied(topics.RUNS, 0, 5, ())], {(topics.RUNS, 0): 0})
        assert result.gaps == {}
        assert await store.next_offset(topics.RUNS, 0) == 6

    async def test_a_gap_inside_a_batch_is_the_logs_own(self, store):
        # control records of transactions: one fetch skips nothing else
        batch = [Applied(topics.RUNS, 0, offset, ()) for offset in (0, 1, 3, 4, 6)]
        result = await store.apply(batch)
        assert (result.gaps, result.applied) == ({}, 5)
        assert await store.next_offset(topics.RUNS, 0) == 7


class TestAdminViews:
    async def test_run_detail_has_executions_deliveries_and_attempts(self, store, feed):
        run = launched()
        await feed([run, *run_events(run, [OK, FAIL], deliveries=3)])
        detail = await store.run_detail(run.run_id)
        assert detail["status"] == "FAILURE"
        assert detail["info_status"] == "complete_with_error"
        [x0, x1] = detail["executions"]
        assert (x0["exit_code"], x0["duration_ms"], x0["log_tail"]["stdout"]) == (
            0,
            2000,
            "out 0\n",
        )
        assert (x1["status"], x1["exit_code"], x1["log_tail"]["stderr"]) == ("FAILURE", 1, "boom\n")
        [delivery] = detail["deliveries"]
        assert delivery["state"] == "exhausted"
        assert [a["attempt"] for a in delivery["attempts"]] == [1, 2, 3]
        assert [a["status"] for a in detail["actions"]] == ["SUCCESS", "FAILURE"]

    async def test_a_canceled_delivery_ends_canceled_with_its_reason(self, store, feed):
        run = launched()
        retried = DeliveryAttempted(
            run_id=run.run_id,
            message_id="msg-1",
            subscription_id="sub-1",
            url="https://hooks.example.com/runs",
            attempt=1,
            outcome="failed",
            status_code=500,
            next_attempt_at=datetime(2026, 12, 6, 12, 0, tzinfo=UTC),
        )
        why = "the subscription's statuses (FAILURE) no longer include SUCCESS"
        filtered = canceled(run.run_id, 1, attempts=1, reason=why, cause="filtered")
        deleted = canceled(run.run_id, 2)  # before its first attempt
        await feed([run, *run_events(run, [OK]), retried, filtered, deleted])
        one, two = (await store.run_detail(run.run_id))["deliveries"]
        assert (one["state"], one["attempt_count"], one["next_attempt_at"]) == ("canceled", 1, None)
        assert one["last_error"] == why and [a["outcome"] for a in one["attempts"]] == ["failed"]
        assert (two["state"], two["attempt_count"], two["attempts"]) == ("canceled", 0, [])
        assert two["last_error"] == "the subscription was deleted"

    async def test_a_late_second_report_of_an_execution_changes_nothing(self, store, feed):
        # a runner that lost its lease reports after the new owner aborted the execution
        run = launched()
        events = run_events(run, [OK], finish=False)
        [finished] = [e for e in events if isinstance(e, ExecutionFinished)]
        aborted = finished.model_copy(
            update={"status": RunStatus.ABORTED, "exit_code": None, "error": "runner lost"}
        )
        late = finished.model_copy(update={"event_id": "late-report"})
        await feed([run, *[aborted if e is finished else e for e in events], late])
        [ex] = (await store.run_detail(run.run_id))["executions"]
        assert (ex["status"], ex["exit_code"]) == ("ABORTED", None)

    async def test_runs_are_listed_newest_first_with_a_cursor(self, store, feed):
        runs = [launched() for _ in range(5)]
        await feed(runs)
        page = await store.list_runs(RunFilter(limit=2))
        assert len(page["runs"]) == 2 and page["next_cursor"]
        seen = [r["run_id"] for r in page["runs"]]
        from hookrun.status.store import decode_cursor

        while page["next_cursor"]:
            page = await store.list_runs(
                RunFilter(limit=2, after=decode_cursor(page["next_cursor"]))
            )
            seen += [r["run_id"] for r in page["runs"]]
        assert sorted(seen) == sorted(r.run_id for r in runs)
        assert len(seen) == 5

    async def test_the_trigger_log_has_accepted_and_rejected_launches(self, store, feed):
        run = launched()
        await feed([run, rejected()])
        log = await store.trigger_log("tok", None, 10)
        outcomes = sorted((e["outcome"], e["reason"]) for e in log["entries"])
        assert outcomes == [
            ("accepted", "all conditions passed"),
            ("rejected", "conditions[0] (static_secret): mismatch"),
        ]

    async def test_a_replay_and_a_test_launch_are_logged_as_skipping_the_conditions(
        self, store, feed
    ):
        original = launched()
        replay = launched(replay_of=original.run_id)
        await feed([original, replay, launched(is_test=True)])
        log = await store.trigger_log("tok", None, 10)
        reasons = {e["run_id"]: e["reason"] for e in log["entries"]}
        assert reasons[original.run_id] == "all conditions passed"
        assert reasons[replay.run_id] == f"replay of {original.run_id} (conditions skipped)"
        assert "test launch (conditions skipped)" in reasons.values()


class TestBatchedStatements:
    """A batch is applied as grouped executemany calls; the rows must be as if one by one."""

    async def test_one_batch_of_interleaved_runs_leaves_the_same_rows_as_one_event_at_a_time(
        self, tmp_path
    ):
        import itertools

        from hookrun.events import decode, encode
        from hookrun.status.projection import Position, cloudevent_json, fold
        from hookrun.status.sqlite import SqliteStore
        from hookrun.status.store import TABLES

        runs = [launched() for _ in range(4)]
        per_run = [
            [runs[0], *run_events(runs[0], [OK, OK], deliveries=2)],
            [runs[1], *run_events(runs[1], [OK, FAIL], pipeline=True, deliveries=1)],
            [runs[2], *run_events(runs[2], [FAIL], finish=False)],
            [runs[3], *run_events(runs[3], [OK], deliveries=3)],
        ]
        # round-robin: every run's events stay in order, runs interleave
        events = [e for group in itertools.zip_longest(*per_run) for e in group if e is not None]
        items = []
        offsets = {topics.RUNS: itertools.count(), topics.TRIGGERS: itertools.count()}
        for event in events:
            record = encode(event)
            off = next(offsets[record.topic])
            at = Position(record.topic, 0, off, cloudevent_json(record.value, record.headers))
            ops = fold(decode(record.value, record.headers), at)
            items.append(Applied(record.topic, 0, off, ops, event.run_id))

        async def rows(batches):
            store = SqliteStore(tmp_path / f"{len(batches)}.db")
            await store.open()
            for batch in batches:
                await store.apply(batch)
            out = {t: sorted(map(repr, await store._rows(f"SELECT * FROM {t}"))) for t in TABLES}
            await store.close()
            return out

        one_by_one = await rows([[item] for item in items])
        assert one_by_one["runs"] and one_by_one["deliveries"]
        assert await rows([items]) == one_by_one
