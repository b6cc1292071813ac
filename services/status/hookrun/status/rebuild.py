"""The rebuild command: replay the topics from offset 0 into a fresh store, in parallel, then swap it in."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import multiprocessing
import os
import sys
from collections.abc import Callable, Iterator, MutableSequence, Sequence
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, TopicPartition

from hookrun.events import topics
from hookrun.events.kafka import consumer_settings, partitions_of_topics
from hookrun.status.config import Settings, sqlite_path
from hookrun.status.postgres import PostgresStore
from hookrun.status.projector import Projector
from hookrun.status.sqlite import SqliteStore, remove_database
from hookrun.status.store import SqlStore

#: ``progress(done, total)``: records replayed so far out of those the rebuild replays.
ProgressCallback = Callable[[int, int], None]


async def rebuild(settings: Settings, progress: ProgressCallback | None = None) -> int:
    """Replay the topics from offset 0 into a fresh store, then swap it in; return the records.

    The partitions are shared out between ``hookrun_rebuild_workers`` processes (default: one
    per CPU). Each projects its share into its own scratch SQLite file (PostgreSQL: into the
    one fresh schema); the files are then merged into the first. A run's events, and so every
    row they make, sit in one partition, so the shares never touch the same row.
    ``progress`` is called a few times a second while the shares are projected.
    """
    names = [
        topics.named(topics.RUNS, settings.hookrun_namespace),
        topics.named(topics.TRIGGERS, settings.hookrun_namespace),
    ]
    bootstrap = settings.kafka_bootstrap_servers
    ends = await log_ends(bootstrap, names)
    shares = _shares(ends, _workers(settings.hookrun_rebuild_workers))
    # A core to spare per process: each also folds in a thread while it writes.
    spare = len(shares) < _cpus()
    path = sqlite_path(settings.hookrun_database_url)
    if path is not None:
        files = [path.with_name(f"{path.name}.rebuild{i or ''}") for i in range(len(shares))]
        for file in files:
            remove_database(file)  # a CLI command: nothing else waits on this event loop
        stores: list[SqlStore] = [SqliteStore(file, scratch=True) for file in files]
    else:
        import psycopg

        schema = "hookrun_status_rebuild"
        async with await psycopg.AsyncConnection.connect(
            settings.hookrun_database_url, autocommit=True
        ) as conn:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        stores = [
            PostgresStore(settings.hookrun_database_url, schema=schema, readers=1, scratch=True)
            for _ in shares
        ]
    # Records projected per share, written by each share's process (shared memory: forked).
    done = multiprocessing.get_context("fork").Array("q", len(shares), lock=False)
    # The other shares' processes are forked before this one opens its store or starts its
    # consumer: they inherit no connection of the rebuild.
    children = [
        _fork_share(store, settings, _Share(share, done, i), spare)
        for i, (store, share) in enumerate(zip(stores[1:], shares[1:], strict=True), 1)
    ]
    fresh = stores[0]
    total = sum(ends.values())
    reporter = None
    if progress is not None:
        reporter = asyncio.create_task(_report(progress, done, total))
    try:
        await fresh.open()
        await _project_share(fresh, settings, _Share(shares[0], done, 0), spare)
        failed = [c.pid for c in await asyncio.gather(*map(_joined, children)) if c.exitcode]
        if failed:
            raise RuntimeError(f"rebuild worker(s) {failed} failed; the live store is unchanged")
    except BaseException:
        for child in children:
            child.kill()
        await fresh.close()
        raise
    finally:
        if reporter is not None:
            reporter.cancel()
    if progress is not None:
        progress(total, total)
    if isinstance(fresh, SqliteStore):
        assert path is not None
        fresh.merge_rebuilt(files[1:])
        fresh.finish_rebuild(path)
    else:
        assert isinstance(fresh, PostgresStore)
        await fresh.swap_into("hookrun_status")
        await fresh.close()
    return sum(ends.values())


def _workers(configured: int) -> int:
    """How many processes rebuild: ``configured``, else one per CPU; 1 where fork is missing."""
    if "fork" not in multiprocessing.get_all_start_methods():
        return 1
    return configured or _cpus()


def _cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _shares(ends: dict[TopicPartition, int], workers: int) -> list[dict[TopicPartition, int]]:
    """Partitions (and their log ends) dealt out so that each share has about as many records.

    Never more shares than partitions with records, never fewer than one.
    """
    shares: list[dict[TopicPartition, int]] = [{} for _ in range(max(1, workers))]
    load = [0] * len(shares)
    for tp, end in sorted(ends.items(), key=lambda item: (-item[1], item[0])):
        i = load.index(min(load))
        shares[i][tp] = end
        load[i] += end
    return [share for share, n in zip(shares, load, strict=True) if n] or [shares[0]]


async def _report(progress: ProgressCallback, done: Sequence[int], total: int) -> None:
    while True:
        progress(sum(done), total)
        await asyncio.sleep(0.25)


@dataclass(frozen=True)
class _Share:
    """Partitions one process projects (with their log ends), and where it counts its progress."""

    ends: dict[TopicPartition, int]
    #: Records projected so far, one slot per share, in memory the forked processes share.
    done: MutableSequence[int]
    slot: int


async def _project_share(store: SqlStore, settings: Settings, share: _Share, spare: bool) -> None:
    """Project the partitions of ``share`` into ``store`` (open) up to their log ends.

    ``spare``: there are more cores than rebuilding processes (fold in a thread).
    """
    projector = Projector(
        store,
        settings.kafka_bootstrap_servers,
        namespace=settings.hookrun_namespace,
        batch_records=5000,
        trusted=True,
        partitions=share.ends,
        fold_in_thread=spare,
    )

    def finished() -> bool:
        at = projector.positions
        reached = {
            tp: min(at.get((tp.topic, tp.partition), 0), end) for tp, end in share.ends.items()
        }
        share.done[share.slot] = sum(reached.values())
        return all(reached[tp] >= end for tp, end in share.ends.items())

    with _no_cyclic_collections(), _short_switch_interval():
        await projector.run(until=finished, read_to=share.ends)


def _fork_share(
    store: SqlStore, settings: Settings, share: _Share, spare: bool
) -> multiprocessing.process.BaseProcess:
    """A forked process projecting ``share`` into ``store``: imports and settings inherited.

    Spawning one would import the service again first, a large part of a rebuild's time.
    """

    async def project() -> None:
        await store.open()
        try:
            await _project_share(store, settings, share, spare)
        finally:
            await store.close()

    def main() -> None:
        asyncio.run(project())

    child = multiprocessing.get_context("fork").Process(
        target=main, name="hookrun-status-rebuild", daemon=True
    )
    child.start()
    return child


async def _joined(
    child: multiprocessing.process.BaseProcess,
) -> multiprocessing.process.BaseProcess:
    await asyncio.to_thread(child.join)
    return child


@contextlib.contextmanager
def _no_cyclic_collections() -> Iterator[None]:
    """Leave the cyclic garbage collector off meanwhile; reference counting frees the rest.

    A replay allocates a few objects per record that reference counting frees, while a batch
    or two of records stay alive: each collection would walk all of them again. A replay makes
    hardly any reference cycles, so the collector has nothing to find meanwhile; they are
    collected afterwards.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@contextlib.contextmanager
def _short_switch_interval(seconds: float = 0.0005) -> Iterator[None]:
    """Let a thread waiting for the GIL get it after 0.5 ms instead of 5 ms meanwhile.

    The SQLite writer releases the GIL for each statement it executes and must win it back
    from the thread folding the next batch, which holds it in pure Python: each statement
    waited up to the whole switch interval.
    """
    saved = sys.getswitchinterval()
    sys.setswitchinterval(seconds)
    try:
        yield
    finally:
        sys.setswitchinterval(saved)


async def log_ends(bootstrap: str, names: list[str]) -> dict[TopicPartition, int]:
    """The current log-end offset of every partition of ``names`` (what a rebuild replays to)."""
    consumer = AIOKafkaConsumer(**consumer_settings(bootstrap, "status-rebuild", group=None))
    await consumer.start()
    try:
        parts = await partitions_of_topics(consumer, names)
        # Tracking them makes the consumer fetch their metadata now (end_offsets waits for it);
        # without it end_offsets finds no leader and retries after 100 ms, once per topic.
        consumer.assign(parts)
        return dict(await consumer.end_offsets(parts))
    finally:
        await consumer.stop()
