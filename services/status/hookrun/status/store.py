"""The status store: its port (``SqlStore``), schema and the queries its SQLite and PostgreSQL adapters share.

Consumed offsets live in the ``offsets`` table and are written in the same transaction as the rows
the records produced, so a crash neither loses nor double-applies an event. The adapters are
``sqlite.SqliteStore`` and ``postgres.PostgresStore``.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import orjson

from hookrun.events import TriggerLaunched, tracing
from hookrun.events.tracing import TraceContext
from hookrun.status.statements import Op, Statement, statements

#: Portable DDL: TEXT timestamps (fixed-width UTC), TEXT JSON, BIGINT counters and offsets.
SCHEMA = [
    """CREATE TABLE IF NOT EXISTS runs (
        run_id TEXT PRIMARY KEY, trigger_id TEXT NOT NULL, config_version TEXT,
        received_at TEXT NOT NULL, is_test INTEGER NOT NULL DEFAULT 0, delivery_id TEXT,
        account TEXT, part INTEGER, runner_id TEXT, action_count INTEGER,
        actions_ok INTEGER NOT NULL DEFAULT 0, actions_failed INTEGER NOT NULL DEFAULT 0,
        info_status TEXT NOT NULL DEFAULT 'pending', run_status TEXT, started_at TEXT,
        completed_at TEXT, duration_ms BIGINT, execution_count INTEGER, error TEXT,
        failed_execution_id TEXT, cancel_requested_at TEXT, redelivery_requested_at TEXT)""",
    "CREATE INDEX IF NOT EXISTS runs_by_time ON runs (received_at, run_id)",
    "CREATE INDEX IF NOT EXISTS runs_by_trigger ON runs (trigger_id, received_at, run_id)",
    "CREATE INDEX IF NOT EXISTS runs_by_replay_of ON runs (replay_of)",
    # The run list filtered by status, newest first, reads only the rows it returns, however
    # few runs have that status (docs/decisions/0053).
    "CREATE INDEX IF NOT EXISTS runs_by_status ON runs (run_status, received_at, run_id)",
    "CREATE INDEX IF NOT EXISTS runs_by_info_status ON runs (info_status, received_at, run_id)",
    """CREATE TABLE IF NOT EXISTS actions (
        run_id TEXT NOT NULL, action_index INTEGER NOT NULL, action TEXT NOT NULL,
        status TEXT NOT NULL, result TEXT, error TEXT, completed_at TEXT,
        PRIMARY KEY (run_id, action_index))""",
    """CREATE TABLE IF NOT EXISTS results (
        run_id TEXT NOT NULL, object_id TEXT NOT NULL, action_index INTEGER NOT NULL,
        seq BIGINT NOT NULL, entry TEXT NOT NULL, PRIMARY KEY (run_id, object_id))""",
    """CREATE TABLE IF NOT EXISTS executions (
        execution_id TEXT PRIMARY KEY, run_id TEXT NOT NULL, action_index INTEGER NOT NULL,
        step TEXT NOT NULL, pipeline_id TEXT, node TEXT, attempt INTEGER NOT NULL DEFAULT 1,
        params TEXT, status TEXT NOT NULL, created_at TEXT, runner_id TEXT, pid INTEGER,
        lease_until TEXT, exit_code INTEGER, started_at TEXT, completed_at TEXT,
        duration_ms BIGINT, output TEXT, stdout_tail TEXT, stderr_tail TEXT, error TEXT)""",
    "CREATE INDEX IF NOT EXISTS executions_by_run ON executions (run_id)",
    """CREATE TABLE IF NOT EXISTS pipelines (
        pipeline_id TEXT PRIMARY KEY, run_id TEXT NOT NULL, name TEXT NOT NULL,
        action_index INTEGER NOT NULL, source_pipeline_id TEXT, nodes TEXT, edges TEXT,
        status TEXT NOT NULL, created_at TEXT, completed_at TEXT)""",
    "CREATE INDEX IF NOT EXISTS pipelines_by_run ON pipelines (run_id)",
    """CREATE TABLE IF NOT EXISTS skipped_nodes (
        pipeline_id TEXT NOT NULL, node TEXT NOT NULL, run_id TEXT NOT NULL, reason TEXT,
        PRIMARY KEY (pipeline_id, node))""",
    "CREATE INDEX IF NOT EXISTS skipped_nodes_by_run ON skipped_nodes (run_id)",
    """CREATE TABLE IF NOT EXISTS deliveries (
        run_id TEXT NOT NULL, message_id TEXT NOT NULL, subscription_id TEXT NOT NULL,
        url TEXT, state TEXT NOT NULL, attempts INTEGER NOT NULL, last_status_code INTEGER,
        last_attempt_at TEXT, next_attempt_at TEXT, last_error TEXT,
        PRIMARY KEY (run_id, message_id, subscription_id))""",
    """CREATE TABLE IF NOT EXISTS attempts (
        run_id TEXT NOT NULL, message_id TEXT NOT NULL, subscription_id TEXT NOT NULL,
        attempt INTEGER NOT NULL, outcome TEXT NOT NULL, status_code INTEGER,
        duration_ms BIGINT, response_excerpt TEXT, error TEXT, at TEXT, next_attempt_at TEXT,
        PRIMARY KEY (run_id, message_id, subscription_id, attempt))""",
    # A subscription's recent success rate and last attempt (GET /api/v1/subscriptions).
    "CREATE INDEX IF NOT EXISTS attempts_by_subscription ON attempts (subscription_id, at)",
    """CREATE TABLE IF NOT EXISTS events (
        topic TEXT NOT NULL, part INTEGER NOT NULL, off BIGINT NOT NULL, run_id TEXT NOT NULL,
        type TEXT NOT NULL, at TEXT, event_id TEXT, doc TEXT NOT NULL,
        PRIMARY KEY (topic, part, off))""",
    "CREATE INDEX IF NOT EXISTS events_by_run ON events (run_id, off)",
    """CREATE TABLE IF NOT EXISTS trigger_log (
        entry_id TEXT PRIMARY KEY, trigger_id TEXT NOT NULL, at TEXT NOT NULL,
        outcome TEXT NOT NULL, reason TEXT, status_code INTEGER, method TEXT, remote_addr TEXT,
        content_length BIGINT, delivery_id TEXT, run_id TEXT, is_test INTEGER NOT NULL DEFAULT 0,
        count BIGINT NOT NULL DEFAULT 1)""",
    "CREATE INDEX IF NOT EXISTS trigger_log_by_trigger ON trigger_log (trigger_id, at, entry_id)",
    # The retention's deletes (``prune_trigger_log``) find old entries by time.
    "CREATE INDEX IF NOT EXISTS trigger_log_by_time ON trigger_log (at)",
    """CREATE TABLE IF NOT EXISTS offsets (
        topic TEXT NOT NULL, part INTEGER NOT NULL, next_offset BIGINT NOT NULL,
        PRIMARY KEY (topic, part))""",
]

#: Columns added to a table of SCHEMA after stores with the table existed: (table, column,
#: declaration). Opening a store adds those it lacks, last, as in SCHEMA's own order.
ADDED_COLUMNS = [
    ("trigger_log", "count", "BIGINT NOT NULL DEFAULT 1"),
    ("runs", "replay_of", "TEXT"),
]

#: Entries that started no run (from ``hookrun.triggers``: rejected, duplicate, filtered, rate-limited), older than the
#: first parameter, the second at most per statement; accepted launches stay with their runs.
PRUNE_TRIGGER_LOG = (
    "DELETE FROM trigger_log WHERE entry_id IN (SELECT entry_id FROM trigger_log"
    " WHERE at < ? AND outcome <> 'accepted' LIMIT ?)"
)

#: Indexes that serve the queries only (the projection's writes go by primary key).
SECONDARY_INDEXES = [ddl for ddl in SCHEMA if ddl.startswith("CREATE INDEX")]
#: Every table, in SCHEMA's order.
TABLES = [m[1] for ddl in SCHEMA if (m := re.match(r"CREATE TABLE IF NOT EXISTS (\w+)", ddl))]

INFO_STATUSES = frozenset({"pending", "completed", "error", "complete_with_error"})


class Applied(NamedTuple):
    """One consumed record: where it is and the row changes it produces (none if undecodable).

    ``run_id`` names the run whose rows the ops change (see ``projection.statements``).
    """

    topic: str
    partition: int
    offset: int
    ops: Sequence[Op] = ()
    run_id: str | None = None


@dataclass
class RunFilter:
    """Filters of the admin run list; ``after`` is the decoded cursor (received_at, run_id)."""

    trigger_id: str | None = None
    run_status: str | None = None
    info_status: str | None = None
    since: str | None = None
    until: str | None = None
    after: tuple[str, str] | None = None
    limit: int = 50


@dataclass
class ApplyResult:
    """Partitions whose batch started past the stored offset: seek back there and retry."""

    gaps: dict[tuple[str, int], int] = field(default_factory=dict)
    applied: int = 0
    #: The next offset now stored for each partition this batch advanced.
    offsets: dict[tuple[str, int], int] = field(default_factory=dict)


def encode_cursor(*parts: str) -> str:
    """An opaque page cursor."""
    return base64.urlsafe_b64encode(orjson.dumps(list(parts))).decode()


def decode_cursor(cursor: str) -> tuple[str, str]:
    """Raise ValueError on anything that is not a cursor this service issued."""
    try:
        a, b = orjson.loads(base64.urlsafe_b64decode(cursor.encode()))
    except Exception as exc:
        raise ValueError("invalid cursor") from exc
    if not isinstance(a, str) or not isinstance(b, str):
        raise ValueError("invalid cursor")
    return a, b


def _loads(text: str | None) -> Any:
    return None if text is None else orjson.loads(text)


#: One read: SQL with ``?`` placeholders and its parameters.
Query = tuple[str, Sequence[Any]]
#: The reads of a run's detail (``SqlStore.run_detail``), each of the run id.
RUN_DETAIL = (
    "SELECT * FROM runs WHERE run_id = ?",
    "SELECT run_id FROM runs WHERE replay_of = ? ORDER BY received_at, run_id",
    "SELECT entry FROM results WHERE run_id = ? ORDER BY seq",
    "SELECT * FROM actions WHERE run_id = ? ORDER BY action_index",
    "SELECT * FROM executions WHERE run_id = ? ORDER BY created_at, execution_id",
    "SELECT * FROM pipelines WHERE run_id = ? ORDER BY created_at, pipeline_id",
    "SELECT pipeline_id, node, reason FROM skipped_nodes WHERE run_id = ? ORDER BY pipeline_id, node",
    "SELECT * FROM deliveries WHERE run_id = ? ORDER BY message_id, subscription_id",
    "SELECT * FROM attempts WHERE run_id = ? ORDER BY message_id, subscription_id, attempt",
)
#: ``grouped(batch)`` when the caller made it already.
Grouped = list[Statement] | None
#: Offsets at which a gap is accepted, by (topic, partition): see ``SqlStore._plan``.
Gaps = dict[tuple[str, int], int]


class SqlStore:
    """What the projection writes to and the routes read from: the queries both databases share.

    Subclasses provide ``open``, ``close``, ``_rows`` and ``_apply`` (which uses ``_plan`` in its
    transaction).
    """

    async def open(self) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    async def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        raise NotImplementedError

    async def _rows_each(self, queries: Sequence[Query]) -> list[list[dict[str, Any]]]:
        """The rows of each query, in order: the reads of one page, sent at once where the
        database is across a network."""
        return [await self._rows(sql, params) for sql, params in queries]

    async def _delete(self, sql: str, params: Sequence[Any]) -> int:
        """Run one DELETE in a transaction of its own; return how many rows it deleted."""
        raise NotImplementedError

    async def prune_trigger_log(self, before: str, *, chunk: int = 5000) -> int:
        """Delete the entries that started no run logged before ``before`` (stored time form).

        In statements of at most ``chunk`` rows, so that the projection's batches are not held
        up behind one long delete. Returns how many entries were deleted.
        """
        deleted = 0
        while True:
            n = await self._delete(PRUNE_TRIGGER_LOG, (before, chunk))
            deleted += n
            if n < chunk:
                return deleted

    async def apply(
        self,
        batch: Sequence[Applied],
        accept_gaps: Gaps | None = None,
        *,
        grouped: list[Statement] | None = None,
    ) -> ApplyResult:
        """Apply ``batch`` and the offsets it reaches in one transaction.

        Records below a partition's stored offset are skipped; a partition whose records start
        past it is left out and reported in ``gaps``, unless ``accept_gaps`` accepts that gap.
        ``grouped``: ``grouped(batch)``, made already.
        """
        return await self._apply(batch, accept_gaps or {}, grouped)

    async def _apply(self, batch: Sequence[Applied], accept: Gaps, given: Grouped) -> ApplyResult:
        raise NotImplementedError

    @staticmethod
    def _plan(
        batch: Sequence[Applied], stored: dict[tuple[str, int], int], accept: Gaps, given: Grouped
    ) -> tuple[list[Statement], dict[tuple[str, int], int], ApplyResult]:
        """The statements of the records to apply, their partitions' next offsets, the result.

        Skips records applied already and stops a partition at a gap; ``given`` is
        ``grouped(batch)``, which the statements are when no record was skipped.
        """
        result = ApplyResult()
        todo: list[Applied] = []
        new: dict[tuple[str, int], int] = {}
        for item in batch:
            tp = (item.topic, item.partition)
            if tp in result.gaps:
                continue
            expected = new.get(tp)
            if expected is None:  # the partition's first record to apply in this batch
                expected = stored.get(tp, 0)
                if item.offset < expected:
                    continue  # applied already: a redelivery after a crash or a rebalance
                if item.offset > expected and accept.get(tp) != expected:
                    # Records between what the store holds and this one were never applied
                    # here (a swapped-in store, another instance's stale position): re-read
                    # from the store's offset. A gap the caller accepts is the log's own
                    # (retention, control records of transactions), as is any gap inside a
                    # batch: one fetch skips nothing else.
                    result.gaps[tp] = expected
                    continue
            todo.append(item)
            new[tp] = item.offset + 1
        result.applied = len(todo)
        result.offsets = new
        groups = given if given is not None and len(todo) == len(batch) else grouped(todo)
        return groups, new, result

    async def offsets(self, topic: str) -> dict[int, int]:
        rows = await self._rows("SELECT part, next_offset FROM offsets WHERE topic = ?", (topic,))
        return {r["part"]: r["next_offset"] for r in rows}

    async def next_offset(self, topic: str, partition: int) -> int:
        rows = await self._rows(
            "SELECT next_offset FROM offsets WHERE topic = ? AND part = ?", (topic, partition)
        )
        return int(rows[0]["next_offset"]) if rows else 0

    async def run_info(self, run_id: str) -> dict[str, Any] | None:
        # One query (the hot path): a run without results yields one row with a NULL entry.
        rows = await self._rows(
            "SELECT r.trigger_id, r.info_status, s.entry FROM runs r"
            " LEFT JOIN results s ON s.run_id = r.run_id WHERE r.run_id = ? ORDER BY s.seq",
            (run_id,),
        )
        if not rows:
            return None
        return {
            "trigger_id": rows[0]["trigger_id"],
            "status": rows[0]["info_status"],
            "result": [orjson.loads(r["entry"]) for r in rows if r["entry"] is not None],
        }

    async def list_runs(self, f: RunFilter) -> dict[str, Any]:
        where: list[str] = []
        params: list[Any] = []
        for column, value in (
            ("trigger_id = ?", f.trigger_id),
            ("run_status = ?", f.run_status),
            ("info_status = ?", f.info_status),
            ("received_at >= ?", f.since),
            ("received_at < ?", f.until),
        ):
            if value is not None:
                where.append(column)
                params.append(value)
        if f.after is not None:
            # Newest first. A row value, which both databases bound the index scan with; spelled
            # out as an OR, PostgreSQL read every newer row to skip it (docs/decisions/0053).
            where.append("(received_at, run_id) < (?, ?)")
            params.extend(f.after)
        sql = "SELECT * FROM runs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY received_at DESC, run_id DESC LIMIT ?"
        params.append(f.limit + 1)
        rows = await self._rows(sql, params)
        page = rows[: f.limit]
        cursor = None
        if len(rows) > f.limit:
            cursor = encode_cursor(page[-1]["received_at"], page[-1]["run_id"])
        return {"runs": [_run(r) for r in page], "next_cursor": cursor}

    async def run_detail(self, run_id: str) -> dict[str, Any] | None:
        (
            rows,
            replays,
            results,
            actions,
            executions,
            pipelines,
            skipped,
            deliveries,
            attempts,
        ) = await self._rows_each([(sql, (run_id,)) for sql in RUN_DETAIL])
        if not rows:
            return None
        out = _run(rows[0])
        out["replays"] = [r["run_id"] for r in replays]
        out["result"] = [orjson.loads(r["entry"]) for r in results]
        out["actions"] = [
            {
                "action_index": a["action_index"],
                "action": a["action"],
                "status": a["status"],
                "result": _loads(a["result"]),
                "error": a["error"],
                "completed_at": a["completed_at"],
            }
            for a in actions
        ]
        out["executions"] = [
            {
                "execution_id": x["execution_id"],
                "action_index": x["action_index"],
                "step": x["step"],
                "pipeline_id": x["pipeline_id"],
                "node": x["node"],
                "attempt": x["attempt"],
                "params": _loads(x["params"]),
                "status": x["status"],
                "exit_code": x["exit_code"],
                "runner_id": x["runner_id"],
                "created_at": x["created_at"],
                "started_at": x["started_at"],
                "completed_at": x["completed_at"],
                "duration_ms": x["duration_ms"],
                "output": _loads(x["output"]),
                "log_tail": {"stdout": x["stdout_tail"] or "", "stderr": x["stderr_tail"] or ""},
                "error": x["error"],
            }
            for x in executions
        ]
        out["pipelines"] = [
            {
                "pipeline_id": p["pipeline_id"],
                "name": p["name"],
                "action_index": p["action_index"],
                "source_pipeline_id": p["source_pipeline_id"],
                "nodes": _loads(p["nodes"]),
                "edges": _loads(p["edges"]),
                "status": p["status"],
                "created_at": p["created_at"],
                "completed_at": p["completed_at"],
                "skipped": {
                    s["node"]: s["reason"] for s in skipped if s["pipeline_id"] == p["pipeline_id"]
                },
            }
            for p in pipelines
        ]
        out["deliveries"] = [
            {
                "message_id": d["message_id"],
                "subscription_id": d["subscription_id"],
                "url": d["url"],
                "state": d["state"],
                "attempt_count": d["attempts"],
                "last_status_code": d["last_status_code"],
                "last_attempt_at": d["last_attempt_at"],
                "next_attempt_at": d["next_attempt_at"],
                "last_error": d["last_error"],
                "attempts": [
                    {
                        k: a[k]
                        for k in (
                            "attempt",
                            "outcome",
                            "status_code",
                            "duration_ms",
                            "response_excerpt",
                            "error",
                            "at",
                            "next_attempt_at",
                        )
                    }
                    for a in attempts
                    if (a["message_id"], a["subscription_id"])
                    == (d["message_id"], d["subscription_id"])
                ],
            }
            for d in deliveries
        ]
        return out

    async def subscription_stats(self, since: str) -> dict[str, dict[str, Any]]:
        """Per subscription id: ``attempts`` and ``succeeded`` at or after ``since`` (stored
        time text), and its ``last_attempt`` ever (``at``, ``outcome``, ``status_code``)."""
        stats: dict[str, dict[str, Any]] = {}
        for row in await self._rows(
            "SELECT subscription_id, COUNT(*) AS attempts,"
            " SUM(CASE WHEN outcome = 'succeeded' THEN 1 ELSE 0 END) AS succeeded"
            " FROM attempts WHERE at >= ? GROUP BY subscription_id",
            (since,),
        ):
            stats[row["subscription_id"]] = {
                "attempts": int(row["attempts"]),
                "succeeded": int(row["succeeded"] or 0),
            }
        for row in await self._rows(
            "SELECT a.subscription_id, a.at, a.outcome, a.status_code FROM attempts a"
            " JOIN (SELECT subscription_id, MAX(at) AS last_at FROM attempts"
            " GROUP BY subscription_id) m"
            " ON a.subscription_id = m.subscription_id AND a.at = m.last_at"
            " ORDER BY a.attempt"
        ):
            stats.setdefault(row["subscription_id"], {"attempts": 0, "succeeded": 0})[
                "last_attempt"
            ] = {"at": row["at"], "outcome": row["outcome"], "status_code": row["status_code"]}
        return stats

    async def launch_of(self, run_id: str) -> dict[str, Any] | None:
        """The data of the run's TriggerLaunched as stored (its request body included), or None."""
        rows = await self._rows(
            "SELECT doc FROM events WHERE run_id = ? AND type = ? ORDER BY off LIMIT 1",
            (run_id, TriggerLaunched.type),
        )
        if not rows:
            return None
        data: dict[str, Any] = orjson.loads(rows[0]["doc"])["data"]
        return data

    async def run_trace(self, run_id: str) -> TraceContext | None:
        """The trace context of the run (its first recorded event's), if it has one."""
        rows = await self._rows(
            "SELECT doc FROM events WHERE run_id = ? ORDER BY off LIMIT 1", (run_id,)
        )
        doc = _loads(rows[0]["doc"]) if rows else None
        if not isinstance(doc, dict):
            return None
        return tracing.parse(doc.get("traceparent"), doc.get("tracestate"))

    async def run_events(self, run_id: str) -> list[dict[str, Any]]:
        rows = await self._rows("SELECT doc FROM events WHERE run_id = ? ORDER BY off", (run_id,))
        return [orjson.loads(r["doc"]) for r in rows]

    async def trigger_log(
        self, trigger_id: str, after: tuple[str, str] | None, limit: int
    ) -> dict[str, Any]:
        sql = "SELECT * FROM trigger_log WHERE trigger_id = ?"
        params: list[Any] = [trigger_id]
        if after is not None:
            sql += " AND (at, entry_id) < (?, ?)"
            params.extend(after)
        sql += " ORDER BY at DESC, entry_id DESC LIMIT ?"
        params.append(limit + 1)
        rows = await self._rows(sql, params)
        page = rows[:limit]
        cursor = encode_cursor(page[-1]["at"], page[-1]["entry_id"]) if len(rows) > limit else None
        entries = [{**r, "is_test": bool(r["is_test"])} for r in page]
        return {"entries": entries, "next_cursor": cursor}

    async def runs_changed(
        self, topic: str, seen: dict[int, int]
    ) -> tuple[list[dict[str, Any]], dict[int, int]]:
        """The runs whose events were stored past ``seen`` (partition -> next offset of
        ``topic``), in the order of their latest change, and the offsets that reaches.

        A partition missing from ``seen`` counts from offset 0.
        """
        ends = await self.offsets(topic)
        changed: dict[str, None] = {}
        for part, end in sorted(ends.items()):
            start = seen.get(part, 0)
            if end <= start:
                continue
            rows = await self._rows(
                "SELECT run_id FROM events WHERE topic = ? AND part = ? AND off >= ? AND off < ?"
                " ORDER BY off",
                (topic, part, start, end),
            )
            for r in rows:
                changed.pop(r["run_id"], None)
                changed[r["run_id"]] = None
        reached = {**seen, **ends}
        if not changed:
            return [], reached
        ids = list(changed)
        found: dict[str, dict[str, Any]] = {}
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            marks = ", ".join("?" * len(chunk))
            for r in await self._rows(f"SELECT * FROM runs WHERE run_id IN ({marks})", chunk):
                found[r["run_id"]] = _run(r)
        return [found[i] for i in ids if i in found], reached

    async def launch_counts(self, since: str) -> list[dict[str, Any]]:
        """Trigger-log entries since ``since`` (stored time form) by trigger and outcome:
        ``{trigger_id, outcome, count, last_at}``; a sampled entry counts for all it stands for."""
        return await self._rows(
            "SELECT trigger_id, outcome, SUM(count) AS count, MAX(at) AS last_at FROM trigger_log"
            " WHERE at >= ? GROUP BY trigger_id, outcome ORDER BY trigger_id, outcome",
            (since,),
        )


def _run(r: dict[str, Any]) -> dict[str, Any]:
    return {
        "run_id": r["run_id"],
        "trigger_id": r["trigger_id"],
        "status": r["run_status"],
        "info_status": r["info_status"],
        "is_test": bool(r["is_test"]),
        "config_version": r["config_version"],
        "delivery_id": r["delivery_id"],
        "account": r["account"],
        "received_at": r["received_at"],
        "started_at": r["started_at"],
        "completed_at": r["completed_at"],
        "duration_ms": r["duration_ms"],
        "action_count": r["action_count"],
        "actions_succeeded": r["actions_ok"],
        "actions_failed": r["actions_failed"],
        "execution_count": r["execution_count"],
        "error": r["error"],
        "failed_execution_id": r["failed_execution_id"],
        "cancel_requested_at": r["cancel_requested_at"],
        "redelivery_requested_at": r["redelivery_requested_at"],
        "replay_of": r["replay_of"],
    }


def grouped(todo: Sequence[Applied]) -> list[Statement]:
    """The batch's row changes as ``executemany`` groups."""
    return statements((item.run_id, item.ops) for item in todo)
