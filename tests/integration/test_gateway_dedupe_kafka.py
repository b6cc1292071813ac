"""One run per delivery, against a real broker: concurrent copies, and a failure mid-launch."""

import asyncio
import base64
import hashlib
import hmac
import time
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from standardwebhooks import Webhook

from hookrun.dev.events import read_events
from hookrun.dev.kafka_net import free_port
from hookrun.dev.procs import ServiceProcess
from hookrun.dev.pytest_kafka import new_namespace
from hookrun.events import InboundDeliveryRecorded, encode, topics
from hookrun.events.kafka import KeyHashPartitioner, Publisher, ensure_topics, producer_settings
from hookrun.gateway.adapters import KafkaDeliveryIndex

pytestmark = pytest.mark.kafka

WHSEC = "whsec_" + base64.b64encode(b"dedupe-test-secret-0123456").decode()
CONFIG = f"""
project: {{id: p-1, slug: demo, name: Demo}}
organization: {{id: o-1, slug: acme, title: Acme}}
environment: {{id: e-1, slug: dev, type: DEVELOPMENT}}
steps:
  - {{name: noop, command: ["true"]}}
triggers:
  - id: gh
    title: GitHub
    conditions: [{{preset: github, secret: gh-secret}}]
    actions: [{{action: run_execution, step: noop}}]
    response: {{text: "Created run {{run_id}}"}}
  - id: sw
    title: Standard Webhooks
    conditions: [{{type: standard_webhooks, secret: "{WHSEC}"}}]
    actions: [{{action: run_execution, step: noop}}]
    response: {{text: "Created run {{run_id}}"}}
"""


def github(body: bytes, delivery: str) -> dict[str, str]:
    digest = hmac.new(b"gh-secret", body, hashlib.sha256).hexdigest()
    return {"X-Hub-Signature-256": f"sha256={digest}", "X-GitHub-Delivery": delivery}


def standard_webhooks(body: bytes, msg_id: str) -> dict[str, str]:
    now = datetime.now(UTC)
    signature = Webhook(WHSEC).sign(msg_id, now, body.decode())
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": signature,
    }


def run_id_of(response: httpx.Response) -> str:
    assert response.status_code == 202, (response.status_code, response.text)
    return response.text.removeprefix("Created run ")


@pytest.fixture(scope="module")
def namespace() -> str:
    return new_namespace()


@pytest.fixture
def gateway(kafka_bootstrap, namespace, tmp_path):
    asyncio.run(ensure_topics(kafka_bootstrap, namespace=namespace))
    config = tmp_path / "hookrun.yaml"
    config.write_text(CONFIG)
    port = free_port()
    proc = ServiceProcess(
        f"gateway-{port}",
        "hookrun.gateway",
        {
            "HOOKRUN_CONFIG": str(config),
            "HOOKRUN_PORT": str(port),
            "HOOKRUN_NAMESPACE": namespace,
            "HOOKRUN_KAFKA_TIMEOUT_S": "3",
            "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        },
        tmp_path,
        health_url=f"http://127.0.0.1:{port}/healthz",
    )
    proc.start(wait_s=60)
    yield f"http://127.0.0.1:{port}"
    proc.stop()


async def launches_of(bootstrap: str, namespace: str, delivery: str) -> list[dict]:
    """The committed TriggerLaunched records of ``delivery`` (what a runner would run)."""
    found = await read_events(bootstrap, topics.named(topics.RUNS, namespace), timeout_s=0)
    return [
        e.data()
        for e in found
        if e.headers.get("ce_type") == "hookrun.trigger.launched"
        and e.data().get("delivery_id") == delivery
    ]


async def test_copies_of_one_delivery_that_arrive_at_once_start_one_run(
    gateway, kafka_bootstrap, namespace
):
    body = b'{"n": 1}'
    async with httpx.AsyncClient(base_url=gateway, timeout=30) as client:
        for _ in range(3):
            delivery = str(uuid.uuid4())
            copies = await asyncio.gather(
                *(
                    client.post("/api/v0/launch/gh/", content=body, headers=github(body, delivery))
                    for _ in range(6)
                )
            )
            run_ids = {run_id_of(r) for r in copies}
            assert len(run_ids) == 1, run_ids
            [launched] = await launches_of(kafka_bootstrap, namespace, delivery)
            assert launched["run_id"] in run_ids


async def test_a_replayed_standard_webhook_with_a_new_unsigned_delivery_header_starts_nothing(
    gateway, kafka_bootstrap, namespace
):
    body = b'{"n": 2}'
    msg_id = f"msg_{uuid.uuid4().hex}"
    headers = standard_webhooks(body, msg_id)
    async with httpx.AsyncClient(base_url=gateway, timeout=30) as client:
        first = run_id_of(await client.post("/api/v0/launch/sw/", content=body, headers=headers))
        forged = headers | {"X-GitHub-Delivery": str(uuid.uuid4())}
        again = run_id_of(await client.post("/api/v0/launch/sw/", content=body, headers=forged))
    assert again == first
    assert len(await launches_of(kafka_bootstrap, namespace, msg_id)) == 1


async def _set_topic_configs(bootstrap: str, topic: str, configs: dict[str, str]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        # AlterConfigs replaces the topic's whole set: give the spec's values with the change.
        await admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic, configs)])
    finally:
        await admin.close()


async def test_a_failure_between_the_launch_and_its_dedupe_record_lets_no_retry_start_a_second_run(
    gateway, kafka_bootstrap, namespace
):
    # The broker refuses the dedupe record (too large for its topic) but takes TriggerLaunched:
    # the failure between the two appends that a crash or a lost broker can also cause. 128
    # bytes still admit a transaction's markers, so the transaction can be aborted.
    deliveries = topics.named(topics.INBOUND_DELIVERIES, namespace)
    [spec] = [s for s in topics.specs(namespace=namespace) if s.name == deliveries]
    body = b'{"n": 3}'
    delivery = str(uuid.uuid4())
    async with httpx.AsyncClient(base_url=gateway, timeout=30) as client:
        await _set_topic_configs(
            kafka_bootstrap, deliveries, spec.configs | {"max.message.bytes": "128"}
        )
        try:
            refused = await client.post(
                "/api/v0/launch/gh/", content=body, headers=github(body, delivery)
            )
            assert refused.status_code == 503, refused.text
        finally:
            await _set_topic_configs(kafka_bootstrap, deliveries, spec.configs)
        # The sender retries until the gateway takes it.
        deadline = time.monotonic() + 30
        while True:
            retry = await client.post(
                "/api/v0/launch/gh/", content=body, headers=github(body, delivery)
            )
            if retry.status_code != 503 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
        run_id = run_id_of(retry)
        again = await client.post(
            "/api/v0/launch/gh/", content=body, headers=github(body, delivery)
        )
        assert run_id_of(again) == run_id
    launched = await launches_of(kafka_bootstrap, namespace, delivery)
    assert [e["run_id"] for e in launched] == [run_id]
    records = await read_events(kafka_bootstrap, deliveries, timeout_s=0)
    mapped = [orjson.loads(r.value) for r in records if delivery in r.value.decode()]
    assert {m["run_id"] for m in mapped} == {run_id}


def delivered(delivery: str, at: datetime) -> InboundDeliveryRecorded:
    return InboundDeliveryRecorded(
        trigger_id="gh", delivery_id=delivery, run_id=str(uuid.uuid4()), occurred_at=at
    )


async def test_a_starting_index_reads_only_the_windows_deliveries_and_finds_one_just_accepted(
    kafka_bootstrap,
):
    ns = new_namespace()
    await ensure_topics(kafka_bootstrap, namespace=ns)
    topic = topics.named(topics.INBOUND_DELIVERIES, ns)
    now = datetime.now(UTC)
    # Past the 6 h window yet inside the topic's 7 h retention: still there to be read.
    old = [delivered(f"old-{n}", now - timedelta(hours=6, minutes=30)) for n in range(200)]
    recent = [delivered(f"recent-{n}", now - timedelta(hours=1)) for n in range(3)]
    producer = AIOKafkaProducer(**producer_settings(kafka_bootstrap, "test"))
    await producer.start()
    try:
        partitions = sorted(await producer.partitions_for(topic))
        acks = []
        for event in (*old, *recent):
            record = encode(event)
            # stamped as the gateway that accepted it then would have
            stamp = int(event.occurred_at.timestamp() * 1000)
            acks.append(
                await producer.send(
                    topic, record.value, key=record.key, headers=record.headers, timestamp_ms=stamp
                )
            )
        await asyncio.gather(*acks)
    finally:
        await producer.stop()
    # Another gateway's deliveries, accepted just before a lookup: at least one on each
    # partition, those that held no recent record (where the index started at the end) too.
    hashed = KeyHashPartitioner()
    just: list[InboundDeliveryRecorded] = []
    while {hashed(encode(e).key, partitions, partitions) for e in just} != set(partitions):
        just.append(delivered(f"just-{len(just)}", now))

    index = KafkaDeliveryIndex(kafka_bootstrap, window_s=topics.DEDUPE_WINDOW_S, namespace=ns)
    other = Publisher(kafka_bootstrap, "test", namespace=ns)
    await other.start(wait=True)
    await index.start()
    try:
        assert await index.find("gh", "recent-0") == recent[0].run_id
        assert await index.find("gh", "old-0") is None
        assert set(index.entries()) == {f"gh/recent-{n}" for n in range(3)}
        assert index.records_read == len(recent)  # the old ones were not even decoded
        for event in just:
            await other.publish([event])
            assert await index.find("gh", event.delivery_id) == event.run_id
    finally:
        await index.stop()
        await other.stop()
