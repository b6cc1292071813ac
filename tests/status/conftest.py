"""Status unit-test fixtures: a config with several condition kinds, a store fed events in-process."""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence

import pytest

from hookrun.config import parse_config
from hookrun.events import Event, decode, encode, topics
from hookrun.status.projection import Position, cloudevent_json, fold
from hookrun.status.sqlite import SqliteStore
from hookrun.status.store import Applied
from tests.status.factories import CONFIG


@pytest.fixture
def config():
    return parse_config(CONFIG, "test.yaml")


class Feeder:
    """Applies events to a store as the projector would, at increasing offsets of partition 0."""

    def __init__(self, store: SqliteStore) -> None:
        self.store = store
        self.offsets = itertools.count()

    async def __call__(self, events: Sequence[Event]) -> None:
        batch = []
        for event in events:
            record = encode(event)
            decoded = decode(record.value, record.headers)
            topic = record.topic
            off = next(self.offsets) if topic == topics.RUNS else 0
            at = Position(topic, 0, off, cloudevent_json(record.value, record.headers))
            batch.append(Applied(topic, 0, off, fold(decoded, at)))
        # trigger-log records get their own offsets so the partition stays contiguous
        logged = [a for a in batch if a.topic == topics.TRIGGERS]
        if logged:
            stored = (await self.store.offsets(topics.TRIGGERS)).get(0, 0)
            batch = [a for a in batch if a.topic != topics.TRIGGERS] + [
                Applied(a.topic, 0, stored + i, a.ops) for i, a in enumerate(logged)
            ]
        await self.store.apply(batch)


@pytest.fixture
async def store(tmp_path) -> Iterator[SqliteStore]:
    s = SqliteStore(tmp_path / "status.db")
    await s.open()
    yield s
    await s.close()


@pytest.fixture
def feed(store) -> Feeder:
    return Feeder(store)
