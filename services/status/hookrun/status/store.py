"""The status store: a Store port with SQLite and PostgreSQL adapters sharing one schema and queries.

Consumed offsets live in the ``offsets`` table and are written in the same transaction as the rows
the records produced, so a crash neither loses nor double-applies an event.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import itertools
import os
import re
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import orjson

from hookrun.status.statements import (
    RECOMPUTE_STATUS,
    RECOMPUTE_STATUS_BULK,
    Op,
    Params,
    Statement,
    statements,
)

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
    """CREATE TABLE IF NOT EXISTS events (
        topic TEXT NOT NULL, part INTEGER NOT NULL, off BIGINT NOT NULL, run_id TEXT NOT NULL,
        type TEXT NOT NULL, at TEXT, event_id TEXT, doc TEXT NOT NULL,
        PRIMARY KEY (topic, part, off))""",
    "CREATE INDEX IF NOT EXISTS events_by_run ON events (run_id, off)",
    """CREATE TABLE IF NOT EXISTS trigger_log (
        entry_id TEXT PRIMARY KEY, trigger_id TEXT NOT NULL, at TEXT NOT NULL,
        outcome TEXT NOT NULL, reason TEXT, status_code INTEGER, method TEXT, remote_addr TEXT,
        content_length BIGINT, delivery_id TEXT, run_id TEXT, is_test INTEGER NOT NULL DEFAULT 0)""",
    "CREATE INDEX IF NOT EXISTS trigger_log_by_trigger ON trigger_log (trigger_id, at, entry_id)",
    """CREATE TABLE IF NOT EXISTS offsets (
        topic TEXT NOT NULL, part INTEGER NOT NULL, next_offset BIGINT NOT NULL,
        PRIMARY KEY (topic, part))""",
]

#: Indexes that serve the queries only (the projection's writes go by primary key).
SECONDARY_INDEXES = [ddl for ddl in SCHEMA if ddl.startswith("CREATE INDEX")]
#: Every table, in SCHEMA's order.
TABLES = [m[1] for ddl in SCHEMA if (m := re.match(r"CREATE TABLE IF NOT EXISTS (\w+)", ddl))]

INFO_STATUSES = frozenset({"pending", "completed", "error", "complete_with_error"})


class Applied(NamedTuple):
    """One consumed record: where it is and the row changes it produces (none if undecodable).

    ``run_id`` names the run whose rows the ops change (see ``statements.statements``).
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


class Store(Protocol):
    """What the projection writes to and the routes read from."""

    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def apply(
        self,
        batch: Sequence[Applied],
        accept_gaps: dict[tuple[str, int], int] | None = None,
        *,
        grouped: list[Statement] | None = None,
    ) -> ApplyResult: ...
    async def offsets(self, topic: str) -> dict[int, int]: ...
    async def next_offset(self, topic: str, partition: int) -> int: ...
    async def run_info(self, run_id: str) -> dict[str, Any] | None: ...
    async def list_runs(self, f: RunFilter) -> dict[str, Any]: ...
    async def run_detail(self, run_id: str) -> dict[str, Any] | None: ...
    async def run_events(self, run_id: str) -> list[dict[str, Any]]: ...
    async def trigger_log(
        self, trigger_id: str, after: tuple[str, str] | None, limit: int
    ) -> dict[str, Any]: ...


class SqlStore:
    """Queries shared by both databases; subclasses provide ``_rows`` and ``apply``."""

    async def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        raise NotImplementedError

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
            # Newest first; the row-value comparison spelled out works in both databases.
            where.append("(received_at < ? OR (received_at = ? AND run_id < ?))")
            params.extend([f.after[0], f.after[0], f.after[1]])
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
        rows = await self._rows("SELECT * FROM runs WHERE run_id = ?", (run_id,))
        if not rows:
            return None
        out = _run(rows[0])
        results = await self._rows(
            "SELECT entry FROM results WHERE run_id = ? ORDER BY seq", (run_id,)
        )
        out["result"] = [orjson.loads(r["entry"]) for r in results]
        actions = await self._rows(
            "SELECT * FROM actions WHERE run_id = ? ORDER BY action_index", (run_id,)
        )
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
        executions = await self._rows(
            "SELECT * FROM executions WHERE run_id = ? ORDER BY created_at, execution_id",
            (run_id,),
        )
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
        pipelines = await self._rows(
            "SELECT * FROM pipelines WHERE run_id = ? ORDER BY created_at, pipeline_id", (run_id,)
        )
        skipped = await self._rows(
            "SELECT pipeline_id, node, reason FROM skipped_nodes WHERE run_id = ?"
            " ORDER BY pipeline_id, node",
            (run_id,),
        )
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
        deliveries = await self._rows(
            "SELECT * FROM deliveries WHERE run_id = ? ORDER BY message_id, subscription_id",
            (run_id,),
        )
        attempts = await self._rows(
            "SELECT * FROM attempts WHERE run_id = ? ORDER BY message_id, subscription_id, attempt",
            (run_id,),
        )
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

    async def run_events(self, run_id: str) -> list[dict[str, Any]]:
        rows = await self._rows("SELECT doc FROM events WHERE run_id = ? ORDER BY off", (run_id,))
        return [orjson.loads(r["doc"]) for r in rows]

    async def trigger_log(
        self, trigger_id: str, after: tuple[str, str] | None, limit: int
    ) -> dict[str, Any]:
        sql = "SELECT * FROM trigger_log WHERE trigger_id = ?"
        params: list[Any] = [trigger_id]
        if after is not None:
            sql += " AND (at < ? OR (at = ? AND entry_id < ?))"
            params.extend([after[0], after[0], after[1]])
        sql += " ORDER BY at DESC, entry_id DESC LIMIT ?"
        params.append(limit + 1)
        rows = await self._rows(sql, params)
        page = rows[:limit]
        cursor = encode_cursor(page[-1]["at"], page[-1]["entry_id"]) if len(rows) > limit else None
        entries = [{**r, "is_test": bool(r["is_test"])} for r in page]
        return {"entries": entries, "next_cursor": cursor}


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
    }


def _plan(
    batch: Sequence[Applied],
    stored: dict[tuple[str, int], int],
    accept_gaps: dict[tuple[str, int], int],
) -> tuple[list[Applied], dict[tuple[str, int], int], ApplyResult]:
    """Pick the records to apply: skip those already applied, stop a partition at a gap."""
    result = ApplyResult()
    todo: list[Applied] = []
    new: dict[tuple[str, int], int] = {}
    for item in batch:
        tp = (item.topic, item.partition)
        if tp in result.gaps:
            continue
        expected = new.get(tp, stored.get(tp, 0))
        if item.offset < expected:
            continue  # applied already: a redelivery after a crash or a rebalance
        if item.offset > expected and accept_gaps.get(tp) != expected:
            # Records between what the store holds and this one were never applied here (a
            # swapped-in store, another instance's stale position): re-read from the store's
            # offset. A gap seen again right after that seek is the log's own (retention).
            result.gaps[tp] = expected
            continue
        todo.append(item)
        new[tp] = item.offset + 1
    result.applied = len(todo)
    result.offsets = new
    return todo, new, result


def grouped(todo: Sequence[Applied]) -> list[Statement]:
    """The batch's row changes as ``executemany`` groups."""
    return statements((item.run_id, item.ops) for item in todo)


_INSERT = re.compile(
    r"(INSERT INTO \w+ \([^()]*\) VALUES )(\([^()]*\))((?: ON CONFLICT .*)?)", re.S
)
_UPDATE = re.compile(r"UPDATE \w+ SET .*? WHERE .*", re.S)
#: Parameters per multi-row statement (SQLite allows 32,766): a few hundred rows each.
_BULK_PARAMS = 8192
#: Rows per multi-row statement at most (see SqliteStore._execute_bulk).
_BULK_ROWS = 256


def bulk_sql(sql: str, rows: int) -> str | None:
    """``sql`` for ``rows`` parameter rows at once (multi-row ``VALUES``); None: no such form.

    SQLite releases the GIL while it executes a statement, and ``executemany`` executes one per
    row: a writer thread had to win the GIL back between every two rows, which it waits for while
    another thread runs Python (up to the 5 ms switch interval each time). One statement per
    group lets the writer run beside the thread that folds the next batch, and binds all the
    parameters in one call. An insert's rows are inserted in order (its ``ON CONFLICT`` applies
    to each as it comes); an update joins its rows by its ``WHERE`` (``statements`` groups rows
    of one round, which change different rows of the table).
    """
    if sql == RECOMPUTE_STATUS:
        return RECOMPUTE_STATUS_BULK.replace("(?)", ",".join(["(?)"] * rows))
    if " FROM " in sql or "'?'" in sql:
        return None
    if (m := _INSERT.fullmatch(sql)) is not None:
        head, values, conflict = m.groups()
        return head + ",".join([values] * rows) + conflict
    if _UPDATE.fullmatch(sql) is not None:
        n = sql.count("?")
        refs = iter(range(1, n + 1))
        body = re.sub(r"\?", lambda _: f"v.column{next(refs)}", sql)
        where = body.index(" WHERE ")
        values = ",".join(["(" + ",".join("?" * n) + ")"] * rows)
        return f"{body[:where]} FROM (VALUES {values}) AS v{body[where:]}"
    return None


_bulk_sql = functools.lru_cache(maxsize=1024)(bulk_sql)


def _statements(
    todo: Sequence[Applied], batch: Sequence[Applied], given: list[Statement] | None
) -> list[Statement]:
    """``grouped(todo)``; ``given`` is ``grouped(batch)``, which it is when nothing was skipped."""
    return given if given is not None and len(todo) == len(batch) else grouped(todo)


def remove_database(path: Path) -> None:
    """Delete a SQLite file and the journal, WAL and shared-memory files beside it, if any."""
    for suffix in ("", "-journal", "-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)


class SqliteStore(SqlStore):
    """One SQLite file (WAL): a writer connection used from a worker thread, reads on the loop.

    Reads are primary-key or index lookups that take microseconds, less than a thread hop, so
    they run inline; WAL lets them proceed while a batch is being written.

    ``scratch=True`` is for a rebuild's fresh file, which is deleted unless the rebuild
    completes: its rollback journal stays in memory and nothing is synced until
    ``finish_rebuild`` (a crash leaves a file the next rebuild throws away). That halves the
    writes (no WAL copy) and must not be used for a file anything else reads meanwhile. Its
    ``SECONDARY_INDEXES`` are created by ``finish_rebuild``, in one pass each.
    """

    def __init__(
        self, path: Path | str, *, apply_delay_s: float = 0.0, scratch: bool = False
    ) -> None:
        self.path = Path(path)
        self._apply_delay_s = apply_delay_s
        self._scratch = scratch
        self._writer: sqlite3.Connection | None = None
        self._reader: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    def _connect(self) -> sqlite3.Connection:
        # A rebuild's writer executes ~20 statements in up to 11 sizes each (_execute_bulk).
        conn = sqlite3.connect(
            self.path,
            isolation_level=None,
            check_same_thread=False,
            cached_statements=512 if self._scratch else 128,
        )
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA busy_timeout = 10000")
        return conn

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        writer = self._connect()
        if self._scratch:
            writer.execute("PRAGMA journal_mode = MEMORY")
            writer.execute("PRAGMA synchronous = OFF")
        else:
            writer.execute("PRAGMA journal_mode = WAL")
            # WAL + NORMAL: a committed batch survives a process crash (kill -9); only an OS
            # crash can lose the last batches, and those are re-read from Kafka (their offsets
            # roll back with them): fine for a projection that can always be rebuilt.
            writer.execute("PRAGMA synchronous = NORMAL")
        # Batches update rows all over the run-id indexes: a bigger page cache than the default
        # 2 MiB keeps them in memory. Only the writer gets it; reads are point lookups. A live
        # store's batches touch recent runs only: 32 MiB (64 MiB held the service at 143 MB of
        # RSS once full, against a goal of 150); a rebuild writes every run: 64 MiB.
        writer.execute(f"PRAGMA cache_size = -{65536 if self._scratch else 32768}")
        for ddl in SCHEMA:
            # A rebuild builds the indexes only the queries use once, at the end: cheaper than
            # keeping them sorted through every batch. The projection's writes use primary keys.
            if not (self._scratch and ddl in SECONDARY_INDEXES):
                writer.execute(ddl)
        self._writer = writer
        self._reader = self._connect()

    async def close(self) -> None:
        with self._lock:
            for conn in (self._reader, self._writer):
                if conn is not None:
                    conn.close()
            self._reader = self._writer = None

    async def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        assert self._reader is not None, "store is not open"
        return [dict(r) for r in self._reader.execute(sql, tuple(params)).fetchall()]

    async def apply(
        self,
        batch: Sequence[Applied],
        accept_gaps: dict[tuple[str, int], int] | None = None,
        *,
        grouped: list[Statement] | None = None,
    ) -> ApplyResult:
        """Apply ``batch`` in one transaction; ``grouped``: ``grouped(batch)``, made already."""
        return await asyncio.to_thread(self._apply, batch, accept_gaps or {}, grouped)

    def _apply(
        self,
        batch: Sequence[Applied],
        accept_gaps: dict[tuple[str, int], int],
        given: list[Statement] | None = None,
    ) -> ApplyResult:
        with self._lock:
            conn = self._writer
            assert conn is not None, "store is not open"
            conn.execute("BEGIN IMMEDIATE")
            try:
                stored = {
                    (r[0], r[1]): r[2]
                    for r in conn.execute("SELECT topic, part, next_offset FROM offsets")
                }
                todo, new, result = _plan(batch, stored, accept_gaps)
                groups = _statements(todo, batch, given)
                half = len(groups) // 2
                for i, (sql, rows) in enumerate(groups):
                    if i == half and self._apply_delay_s:
                        time.sleep(self._apply_delay_s)  # test hook: a slow, interruptible batch
                    if self._scratch:
                        if self._execute_bulk(conn, sql, rows):
                            continue
                    conn.executemany(sql, rows)
                conn.executemany(
                    "INSERT INTO offsets (topic, part, next_offset) VALUES (?, ?, ?)"
                    " ON CONFLICT (topic, part) DO UPDATE SET next_offset = excluded.next_offset",
                    [(t, p, o) for (t, p), o in new.items()],
                )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            return result

    def _execute_bulk(self, conn: sqlite3.Connection, sql: str, rows: list[Params]) -> bool:
        """Execute a group a few hundred rows per statement (``bulk_sql``); False if it can't."""
        if len(rows) < 2:
            return False
        if sql == RECOMPUTE_STATUS:
            rows = [row[:1] for row in rows]  # (run_id, run_id): the bulk form reads it once
        # Statements of 2**k rows only (the largest that fit _BULK_PARAMS, then the remainder's
        # binary digits), so that each is prepared once and then found in the statement cache:
        # preparing a statement of hundreds of rows costs about as much as executing it.
        per = min(_BULK_ROWS, 1 << max(0, (_BULK_PARAMS // len(rows[0])).bit_length() - 1))
        start, left = 0, len(rows)
        while left:
            n = per if left >= per else 1 << (left.bit_length() - 1)
            bulk = _bulk_sql(sql, n)
            if bulk is None:
                return False
            conn.execute(bulk, list(itertools.chain.from_iterable(rows[start : start + n])))
            start += n
            left -= n
        return True

    def merge_rebuilt(self, others: Sequence[Path]) -> None:
        """Copy the rows of other rebuilt files into this (fresh) store, then delete them.

        A parallel rebuild projects disjoint partitions into one file each. Every row belongs
        to one run or one trigger-log entry, and each of those to one partition, so the files
        share no key and their union is what one projector makes of all the partitions. SQLite
        copies the rows itself, without Python in between.
        """
        conn = self._writer
        assert conn is not None, "store is not open"
        for other in others:
            conn.execute("ATTACH DATABASE ? AS part", (str(other),))
            try:
                conn.execute("BEGIN")
                for table in TABLES:
                    # WHERE true: an INSERT ... SELECT followed by ON CONFLICT needs a WHERE
                    # clause (sqlite.org/lang_upsert.html, "parsing ambiguity").
                    conn.execute(
                        f"INSERT INTO main.{table} SELECT * FROM part.{table} WHERE true"
                        " ON CONFLICT DO NOTHING"
                    )
                conn.execute("COMMIT")
            finally:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                conn.execute("DETACH DATABASE part")
            remove_database(other)

    def finish_rebuild(self, target: Path) -> None:
        """Close this (fresh) store and move it over ``target`` (which must not be in use)."""
        assert self._writer is not None
        if self._reader is not None:
            self._reader.close()  # leaving WAL mode needs the only connection
        for ddl in SECONDARY_INDEXES:
            self._writer.execute(ddl)
        self._writer.execute("PRAGMA journal_mode = DELETE")  # no -wal file travels with it
        self._writer.close()
        self._reader = self._writer = None
        # Written unsynced (scratch) or with synchronous=NORMAL: make it durable before it
        # becomes the live file.
        with self.path.open("rb+") as f:
            os.fsync(f.fileno())
        for suffix in ("-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                Path(str(target) + suffix).unlink()
        self.path.replace(target)


class PostgresStore(SqlStore):
    """PostgreSQL via psycopg 3 (async): one writer connection and a few reader connections.

    Tables live in their own schema so that a rebuild can fill a fresh schema and swap it in
    with two renames in one transaction while instances keep serving.
    """

    def __init__(
        self,
        url: str,
        *,
        schema: str = "hookrun_status",
        readers: int = 4,
        apply_delay_s: float = 0.0,
    ) -> None:
        self.url = url
        self.schema = schema
        self._n_readers = readers
        self._apply_delay_s = apply_delay_s
        self._writer: Any = None
        self._readers: asyncio.Queue[Any] = asyncio.Queue()
        self._all: list[Any] = []
        self._sql: dict[str, str] = {}

    def _pg(self, sql: str) -> str:
        out = self._sql.get(sql)
        if out is None:
            out = self._sql[sql] = sql.replace("%", "%%").replace("?", "%s")
        return out

    async def _connect(self, *, autocommit: bool) -> Any:
        import psycopg
        from psycopg.rows import dict_row

        return await psycopg.AsyncConnection.connect(
            self.url,
            autocommit=autocommit,
            row_factory=dict_row,
            options=f"-c search_path={self.schema}",
        )

    async def open(self) -> None:
        self._writer = await self._connect(autocommit=False)
        self._all.append(self._writer)
        async with self._writer.transaction():
            # Concurrent first starts of several instances would race on CREATE IF NOT EXISTS.
            await self._writer.execute("SELECT pg_advisory_xact_lock(7160301)")
            await self._writer.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
            for ddl in SCHEMA:
                await self._writer.execute(ddl)
        for _ in range(self._n_readers):
            conn = await self._connect(autocommit=True)
            self._all.append(conn)
            self._readers.put_nowait(conn)

    async def close(self) -> None:
        for conn in self._all:
            with contextlib.suppress(Exception):
                await conn.close()
        self._all.clear()

    async def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        conn = await self._readers.get()
        try:
            cur = await conn.execute(self._pg(sql), tuple(params))
            return list(await cur.fetchall())
        finally:
            self._readers.put_nowait(conn)

    async def apply(
        self,
        batch: Sequence[Applied],
        accept_gaps: dict[tuple[str, int], int] | None = None,
        *,
        grouped: list[Statement] | None = None,
    ) -> ApplyResult:
        """Apply ``batch`` in one transaction; ``grouped``: ``grouped(batch)``, made already."""
        conn = self._writer
        parts = sorted({(a.topic, a.partition) for a in batch})
        async with conn.transaction():
            # Lock this batch's offset rows: another instance that still believes it owns a
            # partition (mid-rebalance) waits here, then sees the new offsets and skips.
            async with conn.cursor() as cur:
                await cur.executemany(
                    self._pg(
                        "INSERT INTO offsets (topic, part, next_offset) VALUES (?, ?, 0)"
                        " ON CONFLICT DO NOTHING"
                    ),
                    parts,
                )
            stored: dict[tuple[str, int], int] = {}
            for topic, part in parts:
                cur = await conn.execute(
                    self._pg(
                        "SELECT next_offset FROM offsets WHERE topic = ? AND part = ? FOR UPDATE"
                    ),
                    (topic, part),
                )
                row = await cur.fetchone()
                stored[(topic, part)] = int(row["next_offset"])
            todo, new, result = _plan(batch, stored, accept_gaps or {})
            groups = _statements(todo, batch, grouped)
            half = len(groups) // 2
            async with conn.pipeline(), conn.cursor() as cur:
                for i, (sql, rows) in enumerate(groups):
                    if i == half and self._apply_delay_s:
                        await asyncio.sleep(self._apply_delay_s)
                    await cur.executemany(self._pg(sql), rows)
                for (topic, part), off in new.items():
                    await conn.execute(
                        self._pg("UPDATE offsets SET next_offset = ? WHERE topic = ? AND part = ?"),
                        (off, topic, part),
                    )
        return result

    async def swap_into(self, live_schema: str) -> None:
        """Make this (rebuilt) schema the live one, atomically for readers."""
        old = f"{live_schema}_old"
        async with self._writer.transaction():
            await self._writer.execute(f'DROP SCHEMA IF EXISTS "{old}" CASCADE')
            await self._writer.execute(f'ALTER SCHEMA "{live_schema}" RENAME TO "{old}"')
            await self._writer.execute(f'ALTER SCHEMA "{self.schema}" RENAME TO "{live_schema}"')
            await self._writer.execute(f'DROP SCHEMA "{old}" CASCADE')


def open_store(url: str, *, apply_delay_s: float = 0.0, schema: str | None = None) -> SqlStore:
    """The store a database URL names: ``sqlite:///path`` or ``postgresql://...``."""
    from hookrun.status.config import sqlite_path

    path = sqlite_path(url)
    if path is not None:
        return SqliteStore(path, apply_delay_s=apply_delay_s)
    if url.startswith(("postgresql://", "postgres://")):
        return PostgresStore(url, apply_delay_s=apply_delay_s, schema=schema or "hookrun_status")
    raise ValueError(f"HOOKRUN_DATABASE_URL must be sqlite:///... or postgresql://..., not {url!r}")


def chunks(items: Iterable[Applied], size: int) -> Iterable[list[Applied]]:
    """Split ``items`` into lists of at most ``size``."""
    batch: list[Applied] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch
