"""Reads hookrun's records straight from Kafka, for tests and tools (``hookrun events`` reads a
run's events through the admin API)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer

from hookrun.events import topics
from hookrun.events.kafka import partitions_of, security_settings


@dataclass(frozen=True)
class RawEvent:
    """A record as read from Kafka, headers decoded to text."""

    topic: str
    partition: int
    offset: int
    key: str | None
    headers: dict[str, str]
    value: bytes
    #: The record's Kafka timestamp (ms since the epoch).
    timestamp: int

    def data(self) -> Any:
        return orjson.loads(self.value)

    def cloudevent(self) -> dict[str, Any]:
        """The record as a structured-mode CloudEvent dict."""
        out: dict[str, Any] = {k[3:]: v for k, v in self.headers.items() if k.startswith("ce_")}
        out["datacontenttype"] = self.headers.get("content-type")
        out["data"] = self.data()
        return out


async def read_events(
    bootstrap: str,
    topic: str = topics.RUNS,
    *,
    key: str | None = None,
    until: Callable[[list[RawEvent]], bool] | None = None,
    timeout_s: float = 10.0,
) -> list[RawEvent]:
    """Read ``topic`` from the beginning to its end (no consumer group), keeping ``key``'s records.

    With ``until``, keep reading (up to ``timeout_s``) until it returns True for what was found.
    """
    # read_committed, as every consumer of hookrun: an aborted transaction's records (a launch
    # whose dedupe record could not be written with it) never happened.
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        **security_settings(),
        enable_auto_commit=False,
        fetch_max_wait_ms=50,
        group_id=None,
        isolation_level="read_committed",
    )
    await consumer.start()
    found: list[RawEvent] = []
    try:
        parts = await partitions_of(consumer, topic)
        if not parts:
            return found
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        deadline = time.monotonic() + timeout_s
        while True:
            ends = await consumer.end_offsets(parts)
            while [tp for tp in parts if await consumer.position(tp) < ends[tp]]:
                batches = await consumer.getmany(timeout_ms=200, max_records=5000)
                for records in batches.values():
                    for r in records:
                        k = r.key.decode() if r.key else None
                        if key is None or k == key:
                            headers = {n: v.decode(errors="replace") for n, v in r.headers}
                            found.append(
                                RawEvent(
                                    r.topic,
                                    r.partition,
                                    r.offset,
                                    k,
                                    headers,
                                    r.value or b"",
                                    r.timestamp,
                                )
                            )
            if until is None or until(found) or time.monotonic() > deadline:
                return found
            await asyncio.sleep(0.1)
    finally:
        await consumer.stop()
