"""The gateway as a real process against a real broker: durability, CloudEvents, dedupe, 503."""

import hashlib
import hmac
import time
import uuid

import httpx
import pytest

from hookrun.dev.events import read_events
from hookrun.dev.kafka_net import free_port
from hookrun.dev.procs import ServiceProcess
from hookrun.dev.pytest_kafka import new_namespace
from hookrun.events import decode, topics

pytestmark = pytest.mark.kafka

CONFIG = """
project: {id: p-1, slug: demo, name: Demo}
organization: {id: o-1, slug: acme, title: Acme}
environment: {id: e-1, slug: dev, type: DEVELOPMENT}
steps:
  - {name: noop, command: ["true"]}
triggers:
  - id: gh
    title: GitHub
    conditions: [{preset: github, secret: gh-secret}]
    actions: [{action: run_execution, step: noop}]
    response: {text: "Created run {run_id}"}
"""


def signed(body: bytes, delivery: str | None = None) -> dict[str, str]:
    headers = {
        "X-Hub-Signature-256": "sha256=" + hmac.new(b"gh-secret", body, hashlib.sha256).hexdigest()
    }
    if delivery:
        headers["X-GitHub-Delivery"] = delivery
    return headers


@pytest.fixture
def namespace() -> str:
    """The test's own topics: never those of a `make run` on the same broker."""
    return new_namespace()


@pytest.fixture
def start_gateway(kafka_bootstrap, tmp_path, namespace):
    config = tmp_path / "hookrun.yaml"
    config.write_text(CONFIG)
    started: list[ServiceProcess] = []

    def start(
        bootstrap: str = kafka_bootstrap, *, kafka: bool = True, **env: str
    ) -> tuple[ServiceProcess, str]:
        """A started gateway and its URL; ``kafka``: wait until its producer is connected."""
        port = free_port()
        proc = ServiceProcess(
            f"gateway-{port}",
            "hookrun.gateway",
            {
                "HOOKRUN_CONFIG": str(config),
                "HOOKRUN_PORT": str(port),
                "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
                "HOOKRUN_NAMESPACE": namespace,
                **env,
            },
            tmp_path,
            health_url=f"http://127.0.0.1:{port}/healthz",
        )
        started.append(proc)
        proc.start(wait_s=0)
        proc.wait_healthy(60, ready_key="kafka" if kafka else None)
        return proc, f"http://127.0.0.1:{port}"

    yield start
    for proc in started:
        proc.stop()


def run_id_of(response: httpx.Response) -> str:
    assert response.status_code == 202, response.text
    return response.text.removeprefix("Created run ")


async def test_an_accepted_launch_is_a_cloudevent_on_hookrun_runs(
    start_gateway, kafka_bootstrap, namespace
):
    _, url = start_gateway()
    body = b'{"batch_size": 8}'
    run_id = run_id_of(httpx.post(f"{url}/api/v0/launch/gh/", content=body, headers=signed(body)))

    # 202 came after acks=all, so the event is already readable
    [raw] = await read_events(
        kafka_bootstrap, topics.named(topics.RUNS, namespace), key=run_id, timeout_s=0
    )
    assert raw.headers["ce_specversion"] == "1.0"
    assert raw.headers["ce_type"] == "hookrun.trigger.launched"
    assert raw.headers["ce_source"].startswith("hookrun/gateway/")
    assert raw.headers["content-type"] == "application/json"
    uuid.UUID(raw.headers["ce_id"])
    assert raw.headers["ce_time"].endswith("Z")
    event = decode(raw.value, [(k, v.encode()) for k, v in raw.headers.items()])
    assert event.run_id == run_id
    assert event.request.body() == body


async def test_a_redelivery_after_a_gateway_restart_gets_the_original_run(
    start_gateway, kafka_bootstrap, namespace
):
    proc, url = start_gateway()
    body = b'{"n": 1}'
    delivery = str(uuid.uuid4())
    first = run_id_of(
        httpx.post(f"{url}/api/v0/launch/gh/", content=body, headers=signed(body, delivery))
    )
    proc.stop()

    _, url = start_gateway()
    again = run_id_of(
        httpx.post(f"{url}/api/v0/launch/gh/", content=body, headers=signed(body, delivery))
    )
    assert again == first
    launched = await read_events(
        kafka_bootstrap, topics.named(topics.RUNS, namespace), key=first, timeout_s=0
    )
    assert [e.headers["ce_type"] for e in launched] == ["hookrun.trigger.launched"]
    logged = await read_events(
        kafka_bootstrap,
        topics.named(topics.TRIGGERS, namespace),
        key="gh",
        until=lambda found: any(delivery in e.value.decode() for e in found),
    )
    [duplicate] = [e.data() for e in logged if delivery in e.value.decode()]
    assert duplicate["outcome"] == "duplicate"
    assert duplicate["run_id"] == first


async def test_a_second_gateway_instance_knows_the_first_ones_deliveries(start_gateway):
    _, url_a = start_gateway()
    _, url_b = start_gateway()
    body = b'{"n": 2}'
    delivery = str(uuid.uuid4())
    first = run_id_of(
        httpx.post(f"{url_a}/api/v0/launch/gh/", content=body, headers=signed(body, delivery))
    )
    again = run_id_of(
        httpx.post(f"{url_b}/api/v0/launch/gh/", content=body, headers=signed(body, delivery))
    )
    assert again == first


async def test_rejected_launches_are_in_the_trigger_log_on_kafka(
    start_gateway, kafka_bootstrap, namespace
):
    _, url = start_gateway()
    marker = str(uuid.uuid4())
    body = marker.encode()
    r = httpx.post(
        f"{url}/api/v0/launch/gh/", content=body, headers={"X-Hub-Signature-256": "sha256=00"}
    )
    assert r.status_code == 400
    logged = await read_events(
        kafka_bootstrap,
        topics.named(topics.TRIGGERS, namespace),
        key="gh",
        until=lambda f: any(len(marker) == e.data()["content_length"] for e in f),
    )
    assert any(e.data()["reason"].endswith("signature mismatch") for e in logged)


def test_a_stopped_broker_gets_503_with_retry_after_and_recovery_gets_202(
    start_gateway, spare_kafka
):
    _, url = start_gateway(spare_kafka.bootstrap, HOOKRUN_KAFKA_TIMEOUT_S="2")
    body = b"{}"
    run_id_of(httpx.post(f"{url}/api/v0/launch/gh/", content=body, headers=signed(body)))

    spare_kafka.stop()
    r = httpx.post(f"{url}/api/v0/launch/gh/", content=body, headers=signed(body), timeout=30)
    assert r.status_code == 503
    assert int(r.headers["retry-after"]) > 0
    assert "Created run" not in r.text

    spare_kafka.start()
    for _ in range(60):
        r = httpx.post(f"{url}/api/v0/launch/gh/", content=body, headers=signed(body), timeout=30)
        if r.status_code == 202:
            break
    assert r.status_code == 202


async def test_a_topic_table_asked_to_catch_up_while_still_connecting_waits_instead_of_failing(
    kafka_bootstrap, namespace
):
    from hookrun.events.kafka import TopicTable, ensure_topics

    await ensure_topics(kafka_bootstrap, namespace=namespace)
    table = TopicTable(
        kafka_bootstrap, "test", topics.named(topics.INBOUND_DELIVERIES, namespace), lambda e: None
    )
    await table.start()
    try:
        # no await in between: the consumer cannot have connected yet
        await table.catch_up()
    finally:
        await table.stop()


async def test_readyz_is_503_until_kafka_takes_launches(start_gateway):
    # No broker on this port: alive, but a launch could not be acknowledged.
    _, url = start_gateway(bootstrap=f"127.0.0.1:{free_port()}", kafka=False)
    assert httpx.get(f"{url}/healthz", timeout=5).status_code == 200
    r = httpx.get(f"{url}/readyz", timeout=5)
    assert (r.status_code, r.json()) == (503, {"ready": False})

    _, url = start_gateway()
    deadline = time.monotonic() + 30
    while httpx.get(f"{url}/readyz", timeout=5).status_code != 200:
        assert time.monotonic() < deadline, "the gateway never became ready"
        time.sleep(0.1)
