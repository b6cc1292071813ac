"""Shows hookrun events from Kafka: ``python -m hookrun.dev.events --run-id ID``.

Prints each matching record as a structured CloudEvent (the headers folded into JSON), with
TriggerLaunched's base64 body also shown decoded, so a person can read what happened.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import sys
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
                                RawEvent(r.topic, r.partition, r.offset, k, headers, r.value or b"")
                            )
            if until is None or until(found) or time.monotonic() > deadline:
                return found
            await asyncio.sleep(0.1)
    finally:
        await consumer.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--run-id", help="show only this run's events (the Kafka key)")
    parser.add_argument("--topic", default=topics.RUNS)
    parser.add_argument("--key", help="any message key (e.g. a trigger id on hookrun.triggers)")
    parser.add_argument(
        "--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    )
    args = parser.parse_args(argv)
    events = asyncio.run(
        read_events(args.bootstrap, args.topic, key=args.run_id or args.key, timeout_s=0)
    )
    for ev in events:
        doc = ev.cloudevent()
        body = (
            doc["data"].get("request", {}).get("body_b64")
            if isinstance(doc["data"], dict)
            else None
        )
        if body is not None:
            doc["data"]["request"]["body (decoded)"] = base64.b64decode(body).decode(
                "utf-8", "replace"
            )
        print(f"# {ev.topic}[{ev.partition}]@{ev.offset} key={ev.key}")
        print(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode())
    if not events:
        print("no events found", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
