"""The trigger log's retention: the entries that started no run are kept for a configured time.

Rejected and duplicate launches reach the trigger log from ``hookrun.triggers``, and anyone can
send them, so they are not kept forever: ``HOOKRUN_TRIGGER_LOG_RETENTION_S`` (30 days by
default) bounds both the topic (its ``retention.ms``, set at start-up) and the store's rows
(deleted every ``HOOKRUN_TRIGGER_LOG_PRUNE_INTERVAL_S``). Accepted launches stay with their runs.

The status app starts it beside its projection::

    retention = asyncio.create_task(retention.keep_trigger_log(store, settings))

and cancels the task at shutdown.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from typing import Protocol

from aiokafka.errors import KafkaError

from hookrun.events import topics
from hookrun.events.admin import set_topic_configs
from hookrun.status.projection import ts

log = logging.getLogger(__name__)


class RetentionSettings(Protocol):
    """What the retention reads of the status settings."""

    kafka_bootstrap_servers: str
    hookrun_namespace: str
    hookrun_trigger_log_retention_s: int
    hookrun_trigger_log_prune_interval_s: float


class PrunableStore(Protocol):
    async def prune_trigger_log(self, before: str, *, chunk: int = ...) -> int: ...


async def prune_trigger_log(
    store: PrunableStore, retention_s: float, now: datetime | None = None
) -> int:
    """Delete the entries that started no run and are older than ``retention_s``; return how many."""
    cutoff = (now or datetime.now(UTC)) - timedelta(seconds=retention_s)
    stamp = ts(cutoff)
    assert stamp is not None
    return await store.prune_trigger_log(stamp)


async def set_topic_retention(bootstrap: str, namespace: str, retention_s: int) -> bool:
    """Give ``hookrun.triggers`` the retention; return whether it changed."""
    topic = topics.named(topics.TRIGGERS, namespace)
    return await set_topic_configs(bootstrap, topic, {"retention.ms": str(retention_s * 1000)})


async def keep_trigger_log(store: PrunableStore, settings: RetentionSettings) -> None:
    """Forever: set the topic's retention once (retrying while Kafka is away), and prune."""
    topic_task = asyncio.create_task(_topic_retention_forever(settings))
    try:
        while True:
            try:
                deleted = await prune_trigger_log(store, settings.hookrun_trigger_log_retention_s)
            except Exception:
                # The next round retries: a store that fails here fails the projection too,
                # and that reports itself.
                log.exception("pruning the trigger log failed")
            else:
                if deleted:
                    log.info("trigger log: deleted %d entries past the retention", deleted)
            await asyncio.sleep(settings.hookrun_trigger_log_prune_interval_s)
    finally:
        topic_task.cancel()


async def _topic_retention_forever(settings: RetentionSettings) -> None:
    delay = 1.0
    while True:
        try:
            changed = await set_topic_retention(
                settings.kafka_bootstrap_servers,
                settings.hookrun_namespace,
                settings.hookrun_trigger_log_retention_s,
            )
        except (KafkaError, OSError) as exc:
            log.warning("trigger log topic: retention not set yet (%r); retrying", exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 60.0)
            continue
        if changed:
            log.info(
                "trigger log topic: retention set to %d s",
                settings.hookrun_trigger_log_retention_s,
            )
        return
