"""Pipeline definitions by id across every run (copy_pipeline's sources): the index and its fake."""

from __future__ import annotations

from typing import Protocol

from hookrun.events import topics
from hookrun.events.base import Event
from hookrun.events.kafka import TopicTable
from hookrun.events.runs import PipelineDefined


class PipelineIndex(Protocol):
    """Pipeline definitions by id, across every run (copy_pipeline's source)."""

    async def catch_up(self) -> None: ...

    def lookup(self, pipeline_id: str) -> PipelineDefined | None: ...

    def remember(self, definition: PipelineDefined) -> None: ...


class KafkaPipelineIndex:
    """Follows the compacted pipelines topic; catch_up gives read-your-writes across runners."""

    def __init__(self, bootstrap: str, *, namespace: str = topics.NAMESPACE) -> None:
        self._defs: dict[str, PipelineDefined] = {}
        # A fetch is answered as soon as records arrive, so a long wait adds no latency and
        # keeps an idle table from polling the broker (docs/decisions/0008).
        self._table = TopicTable(
            bootstrap,
            "runner",
            topics.named(topics.PIPELINES, namespace),
            self._apply,
            fetch_max_wait_ms=500,
        )

    def _apply(self, event: Event) -> None:
        if isinstance(event, PipelineDefined):
            self._defs[event.pipeline_id] = event

    async def start(self) -> None:
        await self._table.start()

    async def stop(self) -> None:
        await self._table.stop()

    async def catch_up(self) -> None:
        await self._table.catch_up()

    def lookup(self, pipeline_id: str) -> PipelineDefined | None:
        return self._defs.get(pipeline_id)

    def remember(self, definition: PipelineDefined) -> None:
        self._defs[definition.pipeline_id] = definition


class FakePipelineIndex:
    def __init__(self) -> None:
        self._defs: dict[str, PipelineDefined] = {}

    async def catch_up(self) -> None:
        return None

    def lookup(self, pipeline_id: str) -> PipelineDefined | None:
        return self._defs.get(pipeline_id)

    def remember(self, definition: PipelineDefined) -> None:
        self._defs[definition.pipeline_id] = definition
