"""The history benchmark's writer: what it writes decodes, and projects to the runs asked for."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer

from bench.history import ORDERED_TAIL, groups_of, write_history
from hookrun.dev.events import read_events
from hookrun.dev.pytest_kafka import new_namespace
from hookrun.events import decode, topics
from hookrun.events.kafka import consumer_settings, ensure_topics, partitions_of
from hookrun.status.app import open_store
from hookrun.status.config import Settings
from hookrun.status.rebuild import rebuild

pytestmark = pytest.mark.kafka

RUNS = 60
#: The history's span here: inside the dedupe topic's 7 h retention, which the broker applies
#: by the records' times (their events'), so that none is deleted while the test reads.
DAYS = 0.25


def ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


async def test_written_history_decodes_and_projects_to_the_runs_asked_for(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    ns = new_namespace()
    await ensure_topics(kafka_bootstrap, namespace=ns)
    history = await write_history(kafka_bootstrap, ns, RUNS, workers=2, days=DAYS)

    # every record on every topic the writer touched is an event the codec decodes, stamped
    # with the time the event happened
    kinds: Counter[str] = Counter()
    for topic in (topics.RUNS, topics.TRIGGERS, topics.INBOUND_DELIVERIES, topics.PIPELINES):
        for raw in await read_events(kafka_bootstrap, topics.named(topic, ns), timeout_s=0):
            event = decode(raw.value, list(raw.headers.items()))
            kinds[type(event).__name__] += 1
            assert abs(raw.timestamp - ms(event.occurred_at)) <= 1, (raw, event)
    assert kinds["TriggerLaunched"] == kinds["RunFinished"] == RUNS
    assert kinds["InboundDeliveryRecorded"] == history.dedupe_records > 0
    assert kinds["PipelineDefined"] == history.pipelines == kinds["PipelineCreated"] > 0
    assert kinds["TriggerLogged"] == history.trigger_log > 0
    assert kinds["DeliveryAttempted"] >= RUNS

    # a rebuild of the status store finds every run, finished, and the rejected launches
    db = tmp_path / "status.db"
    settings = Settings(
        kafka_bootstrap_servers=kafka_bootstrap,
        hookrun_namespace=ns,
        hookrun_database_url=f"sqlite:///{db}",
        hookrun_rebuild_workers=1,
    )
    await rebuild(settings)
    store = open_store(f"sqlite:///{db}")
    await store.open()
    try:
        runs = await store._rows("SELECT run_status, COUNT(*) AS n FROM runs GROUP BY run_status")
        assert sum(r["n"] for r in runs) == RUNS
        assert None not in {r["run_status"] for r in runs}
        info = await store.run_info(history.sample[0])
        assert info is not None and info["status"] in {"completed", "error"}
        log = await store._rows(
            "SELECT outcome, COUNT(*) AS n FROM trigger_log WHERE outcome <> 'accepted'"
            " GROUP BY outcome"
        )
        assert sum(r["n"] for r in log) == history.trigger_log
    finally:
        await store.close()

    # the groups that served the history are committed at the log end: nothing to replay
    runs_topic = topics.named(topics.RUNS, ns)
    for group in groups_of(ns):
        consumer = AIOKafkaConsumer(**consumer_settings(kafka_bootstrap, "test", group=group))
        await consumer.start()
        try:
            parts = sorted(await partitions_of(consumer, runs_topic))
            ends = await consumer.end_offsets(parts)
            for tp in parts:
                assert (await consumer.committed(tp)) == ends[tp]
        finally:
            await consumer.stop()


async def test_a_month_of_history_keeps_the_times_its_events_happened_in_order(
    kafka_bootstrap: str,
) -> None:
    # The broker takes records a month old as they are (CreateTime, no limit on how old), so
    # the run topic spans the month, not the minutes it took to write it.
    ns = new_namespace()
    await ensure_topics(kafka_bootstrap, namespace=ns)
    await write_history(kafka_bootstrap, ns, 300, workers=2, days=30)
    written = await read_events(kafka_bootstrap, topics.named(topics.RUNS, ns), timeout_s=0)
    now = datetime.now(UTC)
    oldest, newest = min(r.timestamp for r in written), max(r.timestamp for r in written)
    assert ms(now - timedelta(days=30, minutes=5)) < oldest < ms(now - timedelta(days=29))
    assert newest > ms(now - timedelta(hours=3))  # the last of 300 runs: 2.4 h ago
    # However many processes wrote it, each partition holds its newest hours after the rest.
    older, newer = ms(now - ORDERED_TAIL - timedelta(minutes=5)), ms(now - ORDERED_TAIL / 2)
    for partition in {r.partition for r in written}:
        mine = [r for r in written if r.partition == partition]
        last_old = max((r.offset for r in mine if r.timestamp < older), default=-1)
        first_new = min((r.offset for r in mine if r.timestamp > newer), default=1 << 62)
        assert last_old < first_new
