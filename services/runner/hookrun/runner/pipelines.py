"""Pipeline definitions by id across every run (copy_pipeline's sources): the index and its fake.

Definitions are kept without their payload inputs, which stay in the launches that hold them
(see payloads.py), and on disk rather than in memory: a runner's memory does not grow with the
number of pipelines ever defined.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable, Iterable
from contextvars import ContextVar
from typing import Protocol

from hookrun.events import topics
from hookrun.events.base import Event
from hookrun.events.kafka import TopicTable
from hookrun.events.runs import LaunchRef, PipelineDefined, TriggerLaunched
from hookrun.runner.context import SourceLoading
from hookrun.runner.payloads import Key, LaunchReader, key_of
from hookrun.runner.state import RunState

#: Pages of the definitions file SQLite keeps in memory (KiB, as its cache_size takes them).
CACHE_KIB = 2048

#: True in the task that reconciles the runs waiting for a payload input just read: their
#: sources were found before, and definitions never change, so that pass needs no catch-up.
_AFTER_READ: ContextVar[bool] = ContextVar("after_read", default=False)


class PipelineIndex(Protocol):
    """Pipeline definitions by id, across every run (copy_pipeline's source)."""

    async def catch_up(self) -> None: ...

    def lookup(self, pipeline_id: str, *, with_payload: bool = True) -> PipelineDefined | None:
        """See :class:`hookrun.runner.context.PipelineLookup`."""
        ...

    def remember(self, definition: PipelineDefined) -> None: ...


def with_payload_input(
    definition: PipelineDefined, body: Callable[[LaunchRef], str]
) -> PipelineDefined:
    """``definition`` with the body of its ``payload_from`` launch (``body(ref)``, base64) in
    ``inputs_b64`` for each of its payload inputs."""
    ref = definition.payload_from
    if ref is None or not definition.payload_inputs:
        return definition
    b64 = body(ref)
    inputs = {node: dict(named) for node, named in definition.inputs_b64.items()}
    for node, names in definition.payload_inputs.items():
        for name in names:
            inputs.setdefault(node, {})[name] = b64
    return definition.model_copy(update={"inputs_b64": inputs})


def waiting(runs: Iterable[RunState], owns: Callable[[RunState], bool]) -> list[RunState]:
    """The owned runs not started yet: those a payload input just read may let start."""
    return [
        run
        for run in runs
        if run.launched is not None and run.started is None and run.finished is None and owns(run)
    ]


class DefinitionStore:
    """Definitions by pipeline id in a private temporary SQLite file, deleted when closed.

    Its memory is SQLite's page cache (``CACHE_KIB``), however many definitions it holds; a
    lookup reads one row. The first definition stored under an id wins (they never differ).
    """

    def __init__(self) -> None:
        # "" opens a private on-disk database that SQLite deletes when it is closed.
        self._db = sqlite3.connect("", isolation_level=None)
        for pragma in ("journal_mode=OFF", "synchronous=OFF", f"cache_size=-{CACHE_KIB}"):
            self._db.execute(f"PRAGMA {pragma}")
        self._db.execute("CREATE TABLE defs (id TEXT PRIMARY KEY, doc BLOB NOT NULL)")
        # One cursor for every statement: a cursor per call would be tracked by the connection.
        self._cursor = self._db.cursor()

    def put(self, definition: PipelineDefined) -> None:
        self._cursor.execute(
            "INSERT OR IGNORE INTO defs VALUES (?, ?)",
            (definition.pipeline_id, definition.model_dump_json()),
        )

    def get(self, pipeline_id: str) -> PipelineDefined | None:
        row = self._cursor.execute("SELECT doc FROM defs WHERE id = ?", (pipeline_id,)).fetchone()
        return None if row is None else PipelineDefined.model_validate_json(row[0])

    def __len__(self) -> int:
        return int(self._cursor.execute("SELECT count(*) FROM defs").fetchone()[0])

    def close(self) -> None:
        self._db.close()


class KafkaPipelineIndex:
    """Follows the compacted pipelines topic; catch_up gives read-your-writes across runners.

    The topic holds a definition per pipeline ever made, so it is read only once :meth:`start`
    or the first :meth:`catch_up` asks for it: a runner whose runs copy no pipeline never reads
    it (decision 0058).
    """

    def __init__(
        self,
        bootstrap: str,
        *,
        namespace: str = topics.NAMESPACE,
        reader: LaunchReader | None = None,
    ) -> None:
        self._store = DefinitionStore()
        self.reader = reader or LaunchReader(bootstrap, namespace=namespace)
        self.reader.on_read = self._read
        self._wake: Callable[[], Awaitable[None]] | None = None
        self._following = False
        self._waking: set[asyncio.Task[None]] = set()
        # A fetch is answered as soon as records arrive, so a long wait adds no latency and
        # keeps an idle table from polling the broker (docs/decisions/0008).
        self._table = TopicTable(
            bootstrap,
            "runner",
            topics.named(topics.PIPELINES, namespace),
            self._apply,
            fetch_max_wait_ms=500,
        )

    def when_read(self, wake: Callable[[], Awaitable[None]]) -> None:
        """Await ``wake()`` each time a payload input was read (or found unreadable): it
        reconciles the runs that wait for one."""
        self._wake = wake

    def _read(self) -> None:
        if self._wake is not None:
            task = asyncio.ensure_future(self._after_read(self._wake))
            self._waking.add(task)
            task.add_done_callback(self._waking.discard)

    @staticmethod
    async def _after_read(wake: Callable[[], Awaitable[None]]) -> None:
        _AFTER_READ.set(True)  # in this task's own context only
        await wake()

    def _apply(self, event: Event) -> None:
        if isinstance(event, PipelineDefined):
            self._store.put(event)

    async def start(self) -> None:
        """Begin reading the topic in the background, if not begun yet."""
        if not self._following:
            self._following = True
            await self._table.start()

    async def stop(self) -> None:
        try:
            await self._table.stop()
            await self.reader.stop()
        finally:
            self._store.close()

    async def catch_up(self) -> None:
        if not _AFTER_READ.get():
            await self.start()
            await self._table.catch_up()

    def lookup(self, pipeline_id: str, *, with_payload: bool = True) -> PipelineDefined | None:
        definition = self._store.get(pipeline_id)
        if definition is None or not with_payload:
            return definition
        return with_payload_input(definition, self.reader.body)

    def remember(self, definition: PipelineDefined) -> None:
        self._store.put(definition)

    def __len__(self) -> int:
        return len(self._store)


class FakePipelineIndex:
    """In memory; payload inputs come from launches given to :meth:`remember_launch`."""

    def __init__(self) -> None:
        self._defs: dict[str, PipelineDefined] = {}
        self._bodies: dict[Key, str] = {}
        #: Launches a lookup asked for that it was not given.
        self.wanted: list[LaunchRef] = []

    async def catch_up(self) -> None:
        return None

    def lookup(self, pipeline_id: str, *, with_payload: bool = True) -> PipelineDefined | None:
        definition = self._defs.get(pipeline_id)
        if definition is None or not with_payload:
            return definition
        return with_payload_input(definition, self._body)

    def _body(self, ref: LaunchRef) -> str:
        body = self._bodies.get(key_of(ref))
        if body is None:
            self.wanted.append(ref)
            raise SourceLoading(f"reading the launch of run {ref.run_id}")
        return body

    def remember(self, definition: PipelineDefined) -> None:
        self._defs[definition.pipeline_id] = definition

    def remember_launch(self, launched: TriggerLaunched, partition: int, offset: int) -> None:
        self._bodies[(launched.run_id, partition, offset)] = launched.request.body_b64
