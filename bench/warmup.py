"""Warm the broker's JVM before anything is measured.

A freshly started broker interprets and then JIT-compiles its request paths during its first
tens of thousands of requests. Measured on this project's local broker (acks=all, 2,500
records/s, a few records per produce request, ten runs of 12,000 records in a row), the broker's
CPU per record went 379-476 -> 238 -> 223 -> 172 -> 149 us and settled at about 121 us after
some 100,000 records; the p99 of a raw produce went 54 -> 10-17 -> 4-7 ms. After 90,000 records
of this warm-up the same runs started at 253 -> 159 -> 121 us; after 120,000, the gateway's
half-rate latency runs still measured 273-287 and then 172-194 us of broker CPU per launch
(146-160 on a broker warm for an hour), hence 180,000.

`make bench` usually starts its own broker just before the gateway rows, so without a warm-up
those rows measured the JVM's start rather than the gateway. The no-op baselines never touch
the broker, so that error fell on one side of each ratio only. A production broker is long warm.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from bench import namespaces
from hookrun.events import LaunchRequest, TriggerLaunched, encode, topics
from hookrun.events.kafka import consumer_settings, ensure_topics, producer_settings

#: Records per second to produce, and for how long: a steady rate from a few producers, so
#: requests carry one to a few records each, as the services' do under load.
RATE = 3_000
SECONDS = 60.0
#: Producers sending at once (one connection, one request in flight each).
PRODUCERS = 3


async def warm_broker(bootstrap: str) -> str:
    """Produce and fetch like the services do, for a while; return what was done."""
    namespace = namespaces.new("warm-")
    await ensure_topics(bootstrap, namespace=namespace)
    topic = topics.named(topics.RUNS, namespace)
    record = encode(
        TriggerLaunched(
            run_id=str(uuid.uuid4()),
            trigger_id="warm",
            config_version="x",
            request=LaunchRequest(method="POST", path="/", body_b64="x" * 1200),
        )
    )
    producers = [
        AIOKafkaProducer(**producer_settings(bootstrap, "bench-warm")) for _ in range(PRODUCERS)
    ]
    for producer in producers:
        await producer.start()
    consumer = AIOKafkaConsumer(topic, **consumer_settings(bootstrap, "bench-warm", group=None))
    await consumer.start()
    fetched = 0

    async def fetch() -> None:
        nonlocal fetched
        while True:
            batches = await consumer.getmany(timeout_ms=100)
            fetched += sum(len(b) for b in batches.values())

    fetcher = asyncio.create_task(fetch())
    acks: list[asyncio.Future[object]] = []
    started = time.perf_counter()
    try:
        for i in range(int(RATE * SECONDS)):
            delay = started + i / RATE - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            producer = producers[i % PRODUCERS]
            acks.append(
                await producer.send(
                    topic, record.value, key=str(i).encode(), headers=record.headers
                )
            )
            if len(acks) >= 1000:
                await asyncio.gather(*acks)
                acks.clear()
        await asyncio.gather(*acks)
    finally:
        fetcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await fetcher
        for producer in producers:
            await producer.stop()
        await consumer.stop()
    return (
        f"broker warm-up: {int(RATE * SECONDS):,} records produced, {fetched:,} fetched, "
        f"{time.perf_counter() - started:.1f} s"
    )
