"""The PostgreSQL store: instances of one consumer group share it, each projecting its partitions."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Any

from hookrun.status.store import (
    ADDED_COLUMNS,
    SCHEMA,
    SECONDARY_INDEXES,
    Applied,
    ApplyResult,
    Gaps,
    Grouped,
    Query,
    SqlStore,
)


class PostgresStore(SqlStore):
    """PostgreSQL via psycopg 3 (async): one writer connection and a few reader connections.

    Tables live in their own schema so that a rebuild can fill a fresh schema and swap it in
    with two renames in one transaction while instances keep serving. ``scratch=True`` is for
    that fresh schema: its ``SECONDARY_INDEXES`` are created by ``swap_into``, in one pass
    each, instead of kept sorted through every batch.
    """

    def __init__(
        self,
        url: str,
        *,
        schema: str = "hookrun_status",
        readers: int = 4,
        apply_delay_s: float = 0.0,
        scratch: bool = False,
    ) -> None:
        self.url = url
        self.schema = schema
        self._n_readers = readers
        self._apply_delay_s = apply_delay_s
        self._scratch = scratch
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
                if ddl not in SECONDARY_INDEXES:
                    await self._writer.execute(ddl)
            # Columns first: an index may be on an added column.
            for table, column, declaration in ADDED_COLUMNS:
                await self._writer.execute(
                    f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {column} {declaration}"
                )
            if not self._scratch:
                for ddl in SECONDARY_INDEXES:
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

    @contextlib.asynccontextmanager
    async def _reader(self) -> AsyncIterator[Any]:
        """A reader connection, alive, for this task alone until the block ends."""
        conn = await self._readers.get()
        try:
            conn = await self._alive(conn, autocommit=True)
            yield conn
        finally:
            self._readers.put_nowait(conn)

    async def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        async with self._reader() as conn:
            cur = await conn.execute(self._pg(sql), tuple(params))
            return list(await cur.fetchall())

    async def _rows_each(self, queries: Sequence[Query]) -> list[list[dict[str, Any]]]:
        # Pipeline mode: the queries go out together and their results come back together,
        # one round trip instead of one each (docs/decisions/0065).
        async with self._reader() as conn:
            async with conn.pipeline():
                cursors = [await conn.execute(self._pg(sql), tuple(p)) for sql, p in queries]
            return [list(await cur.fetchall()) for cur in cursors]

    async def _delete(self, sql: str, params: Sequence[Any]) -> int:
        # A connection of its own: the writer's may be inside a projection batch's transaction.
        conn = await self._connect(autocommit=True)
        try:
            cur = await conn.execute(self._pg(sql), tuple(params))
            return int(cur.rowcount)
        finally:
            await conn.close()

    async def _alive(self, conn: Any, *, autocommit: bool) -> Any:
        """``conn``, or a new connection in its place once the server dropped it (a restart, a
        failover): the query that found it broken failed, the next one works."""
        if not conn.broken and not conn.closed:
            return conn
        new = await self._connect(autocommit=autocommit)
        self._all = [new if c is conn else c for c in self._all]
        with contextlib.suppress(Exception):
            await conn.close()
        return new

    async def _apply(self, batch: Sequence[Applied], accept: Gaps, given: Grouped) -> ApplyResult:
        conn = self._writer = await self._alive(self._writer, autocommit=False)
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
            groups, new, result = self._plan(batch, stored, accept, given)
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
        if self._scratch:
            async with self._writer.transaction():
                for ddl in SECONDARY_INDEXES:
                    await self._writer.execute(ddl)
        async with self._writer.transaction():
            await self._writer.execute(f'DROP SCHEMA IF EXISTS "{old}" CASCADE')
            # A database the service never opened has no live schema yet.
            await self._writer.execute(f'CREATE SCHEMA IF NOT EXISTS "{live_schema}"')
            await self._writer.execute(f'ALTER SCHEMA "{live_schema}" RENAME TO "{old}"')
            await self._writer.execute(f'ALTER SCHEMA "{self.schema}" RENAME TO "{live_schema}"')
            await self._writer.execute(f'DROP SCHEMA "{old}" CASCADE')
