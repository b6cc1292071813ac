"""A month of realistic history written straight onto a namespace's topics, as the services would have.

Each run is what the runner and the notifier append for it (launch, start, execution or pipeline,
action, finish, delivery attempts), encoded with the real codec; beside them the gateway's dedupe
records, the runner's pipeline definitions and the trigger log's rejected and duplicate
launches. The consumer groups are then committed at the log end, as a system that has served
the history would have left them.
"""

from __future__ import annotations

import asyncio
import base64
import bisect
import multiprocessing
import os
import random
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.producer.message_accumulator import BatchBuilder
from aiokafka.structs import OffsetAndMetadata

from hookrun.events import (
    ActionCompleted,
    DeliveryAttempted,
    DeliveryExhausted,
    Event,
    ExecutionCreated,
    ExecutionFinished,
    ExecutionStarted,
    InboundDeliveryRecorded,
    Invocation,
    LaunchRequest,
    PipelineCreated,
    PipelineFinished,
    PipelineNodeSkipped,
    RunFinished,
    RunStarted,
    RunStatus,
    TriggerLaunched,
    TriggerLogged,
    encode,
    new_id,
    topics,
)
from hookrun.events.kafka import consumer_settings, partitions_of, producer_settings
from hookrun.events.runs import PipelineDefined
from hookrun.runner.consumer import encode_watermark

#: The config the history's runs were launched with (triggers tok, gh, sw, other; step noop;
#: pipeline Nightly): the services of the benchmark load the same one.
CONFIG_VERSION = "v1"
#: How the runs spread over the triggers: gh and sw carry provider delivery ids (deduped).
TRIGGERS = (("gh", 0.5), ("sw", 0.2), ("tok", 0.2), ("other", 0.1))
#: One run in PIPELINE_EVERY runs a pipeline, the others one execution.
PIPELINE_EVERY = 10
#: One run in REJECTED_EVERY is accompanied by a rejected launch, one in DUPLICATE_EVERY of the
#: deduped ones by a redelivery answered with the first run's id.
REJECTED_EVERY = 20
DUPLICATE_EVERY = 50
#: Histories this large are written by one process per CPU (smaller ones are not worth the
#: processes' start).
PARALLEL_FROM = 20_000
#: Batches in flight before the writer waits for their acknowledgements.
IN_FLIGHT = 64
#: The newest part of a history written by several processes is written after the rest, by
#: one: their records would otherwise interleave times hours apart in each partition, where a
#: served system's log is in time order (a seek by time, as the gateway's, relies on that).
ORDERED_TAIL = timedelta(hours=12)


@dataclass
class History:
    """What was written: counts per kind, and run ids spread evenly over the history."""

    runs: int = 0
    #: Records on hookrun.runs (each run's events).
    run_events: int = 0
    trigger_log: int = 0
    dedupe_records: int = 0
    pipelines: int = 0
    #: Every ``len(history) // 1000``-th run id, oldest first (the queries' sample).
    sample: list[str] = field(default_factory=list)
    #: Run ids with a provider delivery id, by (trigger id, delivery id), for the sample.
    deliveries: dict[tuple[str, str], str] = field(default_factory=dict)


def _body(i: int, rng: random.Random) -> bytes:
    """A GitHub push-sized JSON body (about 400 bytes)."""
    return orjson.dumps(
        {
            "ref": "refs/heads/main",
            "before": f"{rng.getrandbits(160):040x}",
            "after": f"{rng.getrandbits(160):040x}",
            "repository": {"id": 1296269, "full_name": "acme/feature-store"},
            "pusher": {"name": "octocat", "email": "octocat@example.com"},
            "head_commit": {"id": f"{i:040x}", "message": f"Update extraction batch {i}"},
            "batch_size": 32,
        }
    )


def run_records(
    i: int, at: datetime, rng: random.Random
) -> tuple[TriggerLaunched, list[Event], list[Event]]:
    """Run ``i`` launched at ``at``: its launch, the rest of its events on hookrun.runs, and
    the records it leaves on the other topics (dedupe record, pipeline definition, log)."""
    roll = rng.random()
    trigger_id = TRIGGERS[-1][0]
    for name, share in TRIGGERS:
        if roll < share:
            trigger_id = name
            break
        roll -= share
    run_id = new_id(at)  # ids carry their time, as the gateway makes them
    delivery_id = {"gh": f"{new_id()}", "sw": f"msg_{i:012d}"}.get(trigger_id)
    body = _body(i, rng)
    launch = TriggerLaunched(
        run_id=run_id,
        trigger_id=trigger_id,
        config_version=CONFIG_VERSION,
        request=LaunchRequest(
            method="POST",
            path=f"/api/v0/launch/{trigger_id}/",
            headers={"content-type": "application/json", "user-agent": "GitHub-Hookshot/1"},
            content_type="application/json",
            remote_addr="140.82.115.1",
            body_b64=base64.b64encode(body).decode(),
        ),
        delivery_id=delivery_id,
        occurred_at=at,
    )
    others: list[Event] = []
    if delivery_id is not None:
        others.append(
            InboundDeliveryRecorded(
                trigger_id=trigger_id, delivery_id=delivery_id, run_id=run_id, occurred_at=at
            )
        )
        if i % DUPLICATE_EVERY == 0:
            others.append(
                TriggerLogged(
                    trigger_id=trigger_id,
                    outcome="duplicate",
                    reason=f"delivery {delivery_id} already started run {run_id}",
                    status_code=202,
                    method="POST",
                    remote_addr="140.82.115.1",
                    content_length=len(body),
                    delivery_id=delivery_id,
                    run_id=run_id,
                    occurred_at=at + timedelta(seconds=30),
                )
            )
    if i % REJECTED_EVERY == 0:
        others.append(
            TriggerLogged(
                trigger_id=trigger_id,
                outcome="rejected",
                reason="conditions[0] (hmac): signature mismatch",
                status_code=400,
                method="POST",
                remote_addr="203.0.113.9",
                content_length=len(body),
                occurred_at=at + timedelta(seconds=1),
            )
        )
    ms = timedelta(milliseconds=1)
    outcome = rng.choices((RunStatus.SUCCESS, RunStatus.FAILURE, RunStatus.TIMED_OUT), (90, 8, 2))[
        0
    ]
    events: list[Event] = [
        RunStarted(
            run_id=run_id,
            trigger_id=trigger_id,
            runner_id="runner-1",
            action_count=1,
            occurred_at=at + 5 * ms,
        )
    ]
    started, done = at + 20 * ms, at + rng.randint(800, 5000) * ms
    executions = 1
    if i % PIPELINE_EVERY == 0:
        # Two nodes, b after a: b runs when a succeeded and is skipped otherwise.
        pipeline_id = new_id(started)
        created = PipelineCreated(
            run_id=run_id,
            pipeline_id=pipeline_id,
            pipeline_name="Nightly",
            action_index=0,
            nodes={"a": "noop", "b": "noop"},
            edges=[("a", "b")],
            parameters={"a": {}, "b": {}},
            trigger_id=trigger_id,
            payload_inputs={"a": ["payload"]},
            occurred_at=at + 10 * ms,
        )
        others.append(PipelineDefined.of(created))
        events.append(created)
        events += _execution(run_id, i, outcome, started, done, pipeline_id=pipeline_id, node="a")
        if outcome is RunStatus.SUCCESS:
            executions = 2
            started, done = done + 10 * ms, done + rng.randint(800, 5000) * ms
            events += _execution(
                run_id, i, outcome, started, done, pipeline_id=pipeline_id, node="b"
            )
        else:
            events.append(
                PipelineNodeSkipped(
                    run_id=run_id,
                    pipeline_id=pipeline_id,
                    node="b",
                    reason="a depends on it and did not succeed",
                    occurred_at=done,
                )
            )
        events.append(
            PipelineFinished(
                run_id=run_id, pipeline_id=pipeline_id, status=outcome, occurred_at=done
            )
        )
        action = "run_pipeline"
        result = {"action": action, "pipeline_name": "Nightly", "pipeline_id": pipeline_id}
    else:
        events += _execution(run_id, i, outcome, started, done)
        execution_id = events[-1].execution_id  # type: ignore[attr-defined]
        action = "run_execution"
        result = {"action": action, "execution_step": "noop", "execution_id": execution_id}
    events += [
        ActionCompleted(
            run_id=run_id,
            action_index=0,
            action=action,
            status=outcome,
            result=result,
            occurred_at=done + ms,
        ),
        RunFinished(
            run_id=run_id,
            trigger_id=trigger_id,
            config_version=CONFIG_VERSION,
            status=outcome,
            started_at=at,
            completed_at=done + 2 * ms,
            duration_ms=(done + 2 * ms - at) // ms,
            execution_count=executions,
            invocation=Invocation(id=run_id, payload=orjson.loads(body), timestamp=at),
            occurred_at=done + 2 * ms,
        ),
    ]
    events += _deliveries(run_id, done + 50 * ms, rng)
    return launch, events, others


def _execution(
    run_id: str,
    i: int,
    outcome: RunStatus,
    started: datetime,
    done: datetime,
    **node: str,
) -> list[Event]:
    """One execution of step noop from creation to its end (``node``: its pipeline and node)."""
    execution_id = new_id(started)
    ok = outcome is RunStatus.SUCCESS
    return [
        ExecutionCreated(
            run_id=run_id,
            execution_id=execution_id,
            action_index=0,
            step="noop",
            params={"batch_size": 32},
            occurred_at=started - timedelta(milliseconds=8),
            **node,
        ),
        ExecutionStarted(
            run_id=run_id,
            execution_id=execution_id,
            runner_id="runner-1",
            pid=4000 + i % 30000,
            lease_until=started + timedelta(seconds=30),
            occurred_at=started,
        ),
        ExecutionFinished(
            run_id=run_id,
            execution_id=execution_id,
            status=outcome,
            exit_code={RunStatus.SUCCESS: 0, RunStatus.FAILURE: 1}.get(outcome),
            started_at=started,
            completed_at=done,
            duration_ms=(done - started) // timedelta(milliseconds=1),
            output={"rows": 1000 + i % 97} if ok else None,
            stdout_tail=f"extracting batch {i}\nwrote 1000 rows\n",
            stderr_tail="" if ok else "Traceback ...\nValueError: bad row\n",
            error=None if ok else outcome.value.lower(),
            occurred_at=done,
        ),
    ]


def _deliveries(run_id: str, at: datetime, rng: random.Random) -> list[Event]:
    """One subscription's attempts: most succeed at once, some after a retry, a few never."""
    message_id = f"msg_{run_id.replace('-', '')}"
    common = {
        "run_id": run_id,
        "message_id": message_id,
        "subscription_id": "sub-1",
        "url": "https://hooks.example.com/runs",
    }
    roll = rng.random()
    failures = 0 if roll < 0.9 else 1 if roll < 0.97 else 3
    out: list[Event] = []
    for n in range(failures):
        out.append(
            DeliveryAttempted(
                **common,
                attempt=n + 1,
                outcome="failed",
                status_code=503,
                duration_ms=120,
                response_excerpt="Service Unavailable",
                next_attempt_at=at + timedelta(seconds=5 * (n + 1)) if n < 2 else None,
                occurred_at=at + timedelta(seconds=5 * n),
            )
        )
    if failures == 3:
        out.append(
            DeliveryExhausted(
                **common, attempts=3, last_error="503", occurred_at=at + timedelta(seconds=11)
            )
        )
    else:
        out.append(
            DeliveryAttempted(
                **common,
                attempt=failures + 1,
                outcome="succeeded",
                status_code=200,
                duration_ms=rng.randint(20, 200),
                occurred_at=at + timedelta(seconds=5 * failures),
            )
        )
    return out


def launch_times(runs: int, days: float, end: datetime | None = None) -> Iterator[datetime]:
    """``runs`` launch times spread evenly over the ``days`` before ``end`` (now)."""
    end = end or datetime.now(UTC)
    start = end - timedelta(days=days)
    step = (end - start) / max(runs, 1)
    for i in range(runs):
        yield start + i * step


async def write_history(
    bootstrap: str,
    namespace: str,
    runs: int,
    *,
    days: float = 30.0,
    seed: int = 19,
    workers: int | None = None,
) -> History:
    """Write ``runs`` runs of history onto ``namespace``'s topics (which must exist), then
    commit the runner's, the notifier's and the status service's groups at the log end; return
    what was written.

    ``workers`` processes (default: one per CPU from PARALLEL_FROM runs) each write every
    ``workers``-th run but the newest ORDERED_TAIL's, written after them by this process; each
    run's records come from one of them, in order.
    """
    if workers is None:
        workers = (os.cpu_count() or 1) if runs >= PARALLEL_FROM else 1
    times = list(launch_times(runs, days))
    parts: list[History] = []
    cut = 0
    if workers > 1:
        cut = bisect.bisect_left(times, times[-1] - ORDERED_TAIL)
        loop = asyncio.get_running_loop()
        spawn = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(workers, mp_context=spawn) as pool:
            parts = await asyncio.gather(
                *(
                    loop.run_in_executor(
                        pool,
                        _write_share,
                        bootstrap,
                        namespace,
                        times,
                        w,
                        workers,
                        seed + w,
                        0,
                        cut,
                    )
                    for w in range(workers)
                )
            )
    tail_seed = seed if workers == 1 else seed + workers
    tail = await _write(bootstrap, namespace, times, 0, 1, tail_seed, cut)
    history = History(runs=runs)
    for part in (*parts, tail):
        history.run_events += part.run_events
        history.trigger_log += part.trigger_log
        history.dedupe_records += part.dedupe_records
        history.pipelines += part.pipelines
        history.deliveries.update(part.deliveries)
    history.sample = sorted((r for part in parts for r in part.sample), key=part_order(parts))
    history.sample += tail.sample
    await commit_at_end(bootstrap, namespace)
    return history


def part_order(parts: list[History]) -> Callable[[str], int]:
    """Sort key putting the workers' samples back in launch order."""
    order = {run_id: n for part in parts for n, run_id in enumerate(part.sample)}
    index = {run_id: w for w, part in enumerate(parts) for run_id in part.sample}
    return lambda run_id: order[run_id] * len(parts) + index[run_id]


def _write_share(*args: Any) -> History:
    """:func:`_write` in a process of the pool."""
    return asyncio.run(_write(*args))


async def _write(
    bootstrap: str,
    namespace: str,
    times: list[datetime],
    share: int,
    shares: int,
    seed: int,
    start: int = 0,
    stop: int | None = None,
) -> History:
    """Write runs ``start + share``, ``start + share + shares``, ... before ``stop`` in batches
    of records, one per partition."""
    rng = random.Random(seed)
    history = History()
    every = max(1, len(times) // 1000)
    producer = AIOKafkaProducer(**producer_settings(bootstrap, "bench-history"))
    await producer.start()
    partitioner = DefaultPartitioner()
    partitions: dict[str, list[int]] = {}
    batches: dict[tuple[str, int], BatchBuilder] = {}
    pending: list[asyncio.Future[object]] = []

    async def flush(topic: str, partition: int) -> None:
        batch = batches.pop((topic, partition))
        pending.append(await producer.send_batch(batch, topic, partition=partition))

    try:
        for i in range(start + share, len(times) if stop is None else stop, shares):
            launch, events, others = run_records(i, times[i], rng)
            if i % every == 0:
                history.sample.append(launch.run_id)
                if launch.delivery_id is not None:
                    history.deliveries[(launch.trigger_id, launch.delivery_id)] = launch.run_id
            for event in (launch, *events, *others):
                record = encode(event)
                topic = topics.named(record.topic, namespace)
                if topic not in partitions:
                    partitions[topic] = sorted(await producer.partitions_for(topic))
                part = partitioner(record.key, partitions[topic], partitions[topic])
                batch = batches.get((topic, part))
                if batch is None:
                    batch = batches[(topic, part)] = producer.create_batch()
                # Stamped with the event's time, as the service that appended it then would
                # have: the topics' time retention and a seek by time see a month of records.
                fields = {
                    "key": record.key,
                    "value": record.value,
                    "headers": record.headers,
                    "timestamp": int(event.occurred_at.timestamp() * 1000),
                }
                if batch.append(**fields) is None:  # full: send it, start anew
                    await flush(topic, part)
                    batches[(topic, part)] = batch = producer.create_batch()
                    batch.append(**fields)
            history.run_events += 1 + len(events)
            for event in others:
                if isinstance(event, InboundDeliveryRecorded):
                    history.dedupe_records += 1
                elif isinstance(event, PipelineDefined):
                    history.pipelines += 1
                else:
                    history.trigger_log += 1
            if len(pending) >= IN_FLIGHT:
                await asyncio.gather(*pending)
                pending.clear()
        for topic, part in list(batches):
            await flush(topic, part)
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return history


def groups_of(namespace: str) -> list[str]:
    """The consumer groups on hookrun.runs that a served history leaves committed."""
    return [f"{namespace}.runner", f"{namespace}.notifier", f"{namespace}.status"]


async def commit_at_end(bootstrap: str, namespace: str) -> None:
    """Commit every group of :func:`groups_of` at hookrun.runs' log end: all of it handled, no
    run unfinished (the runner's low watermark, its commit metadata, is the end too)."""
    topic = topics.named(topics.RUNS, namespace)
    probe = AIOKafkaConsumer(**consumer_settings(bootstrap, "bench-history", group=None))
    await probe.start()
    try:
        parts: list[TopicPartition] = list(await partitions_of(probe, topic))
        ends = await probe.end_offsets(parts)
    finally:
        await probe.stop()
    for group in groups_of(namespace):
        consumer = AIOKafkaConsumer(**consumer_settings(bootstrap, "bench-history", group=group))
        await consumer.start()
        try:
            consumer.assign(parts)
            await consumer.commit(
                {tp: OffsetAndMetadata(end, encode_watermark(end)) for tp, end in ends.items()}
            )
        finally:
            await consumer.stop()
