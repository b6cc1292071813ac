"""The SQLite store: one file per instance (WAL), and the scratch files a rebuild writes and merges."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import os
import re
import sqlite3
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hookrun.status.statements import RECOMPUTE_STATUS, RECOMPUTE_STATUS_BULK, Params
from hookrun.status.store import (
    ADDED_COLUMNS,
    SCHEMA,
    SECONDARY_INDEXES,
    TABLES,
    Applied,
    ApplyResult,
    Gaps,
    Grouped,
    SqlStore,
)


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
        # store's batches touch recent runs only, and its cache stays in the service's memory
        # for good: half of what a rebuild, which writes every run, gets.
        writer.execute(f"PRAGMA cache_size = -{65536 if self._scratch else 32768}")
        for ddl in SCHEMA:
            if ddl not in SECONDARY_INDEXES:
                writer.execute(ddl)
        # Columns first: an index may be on an added column.
        for table, column, declaration in ADDED_COLUMNS:
            if column not in {r[1] for r in writer.execute(f"PRAGMA table_info({table})")}:
                writer.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")
        # A rebuild builds the indexes only the queries use once, at the end: cheaper than
        # keeping them sorted through every batch. The projection's writes use primary keys.
        if not self._scratch:
            for ddl in SECONDARY_INDEXES:
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

    async def _apply(self, batch: Sequence[Applied], accept: Gaps, given: Grouped) -> ApplyResult:
        return await asyncio.to_thread(self._apply_sync, batch, accept, given)

    async def _delete(self, sql: str, params: Sequence[Any]) -> int:
        return await asyncio.to_thread(self._delete_sync, sql, params)

    def _delete_sync(self, sql: str, params: Sequence[Any]) -> int:
        with self._lock:
            conn = self._writer
            assert conn is not None, "store is not open"
            conn.execute("BEGIN IMMEDIATE")
            try:
                deleted = conn.execute(sql, tuple(params)).rowcount
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            return int(deleted)

    def _apply_sync(self, batch: Sequence[Applied], accept: Gaps, given: Grouped) -> ApplyResult:
        with self._lock:
            conn = self._writer
            assert conn is not None, "store is not open"
            conn.execute("BEGIN IMMEDIATE")
            try:
                stored = {
                    (r[0], r[1]): r[2]
                    for r in conn.execute("SELECT topic, part, next_offset FROM offsets")
                }
                groups, new, result = self._plan(batch, stored, accept, given)
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
