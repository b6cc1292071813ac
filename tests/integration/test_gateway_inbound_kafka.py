"""Filters, rate limits, JWT and provider presets through a real gateway process and broker."""

import asyncio
import base64
import hashlib
import hmac
import json
import time
import uuid

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from jwt.algorithms import ECAlgorithm

from hookrun.dev.events import read_events
from hookrun.dev.kafka_net import free_port
from hookrun.dev.procs import ServiceProcess
from hookrun.dev.pytest_kafka import new_namespace
from hookrun.events import decode, topics
from hookrun.events.kafka import ensure_topics
from tests.config.one_trigger import PREAMBLE

pytestmark = pytest.mark.kafka

HEAD = PREAMBLE


@pytest.fixture(scope="module")
def namespace(kafka_bootstrap) -> str:
    """This module's own topics: no other service on the broker reads these launches."""
    name = new_namespace()
    asyncio.run(ensure_topics(kafka_bootstrap, namespace=name))
    return name


@pytest.fixture
def gateway(kafka_bootstrap, namespace, tmp_path):
    """Start a gateway with the given triggers (YAML list items); returns its base URL."""
    started: list[ServiceProcess] = []

    def start(triggers: str, **env: str) -> str:
        config = tmp_path / f"hookrun-{len(started)}.yaml"
        config.write_text(HEAD + triggers)
        port = free_port()
        proc = ServiceProcess(
            f"gateway-{port}",
            "hookrun.gateway",
            {
                "HOOKRUN_CONFIG": str(config),
                "HOOKRUN_PORT": str(port),
                "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
                "HOOKRUN_NAMESPACE": namespace,
                **env,
            },
            tmp_path,
            health_url=f"http://127.0.0.1:{port}/healthz",
        )
        started.append(proc)
        proc.start(wait_s=0)
        proc.wait_healthy(60, ready_key="kafka")
        return f"http://127.0.0.1:{port}"

    yield start
    for proc in started:
        proc.stop()


async def launched(bootstrap: str, namespace: str, run_id: str):
    """The run's TriggerLaunched, read back from hookrun.runs (202 came after acks=all)."""
    [raw] = await read_events(
        bootstrap, topics.named(topics.RUNS, namespace), key=run_id, timeout_s=0
    )
    return decode(raw.value, [(k, v.encode()) for k, v in raw.headers.items()])


async def trigger_log(bootstrap: str, namespace: str, trigger_id: str, count: int) -> list[dict]:
    """The first ``count`` TriggerLogged entries of ``trigger_id`` on hookrun.triggers."""
    found = await read_events(
        bootstrap,
        topics.named(topics.TRIGGERS, namespace),
        key=trigger_id,
        until=lambda f: len(f) >= count,
    )
    return [e.data() for e in found]


def unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


async def test_a_filtered_launch_starts_nothing_and_is_logged_as_filtered(
    gateway, kafka_bootstrap, namespace
):
    trigger = unique("pushes")
    url = gateway(f"""
  - id: {trigger}
    title: Pushes to main
    conditions: [{{type: static_secret, header: X-Token, secret: tok}}]
    filter:
      - {{path: headers.x-github-event, equals: push}}
      - {{path: payload.ref, in: [refs/heads/main]}}
    actions: [{{action: run_execution, step: noop}}]
    response: {{json: {{run_id: "{{run_id}}"}}}}
""")
    launch = f"{url}/api/v0/launch/{trigger}/"
    push = {"X-Token": "tok", "X-GitHub-Event": "push"}
    accepted = httpx.post(launch, content=b'{"ref": "refs/heads/main"}', headers=push)
    assert accepted.status_code == 202
    event = await launched(kafka_bootstrap, namespace, accepted.json()["run_id"])
    assert event.trigger_id == trigger

    left_out = httpx.post(launch, content=b'{"ref": "refs/heads/dev"}', headers=push)
    assert left_out.status_code == 200
    assert left_out.json() == {"ok": True, "filtered": True}
    [entry] = await trigger_log(kafka_bootstrap, namespace, trigger, 1)
    assert entry["outcome"] == "filtered"
    assert entry["status_code"] == 200
    assert entry["reason"] == "filter[1] did not match: payload.ref in ['refs/heads/main']"
    # the accepted launch is the only run of the trigger
    runs = await read_events(kafka_bootstrap, topics.named(topics.RUNS, namespace), timeout_s=0)
    assert sum(trigger.encode() in r.value for r in runs) == 1


async def test_past_the_rate_limit_429_with_retry_after_and_a_rate_limited_entry(
    gateway, kafka_bootstrap, namespace
):
    trigger = unique("limited")
    url = gateway(f"""
  - id: {trigger}
    title: One launch an hour, two at once
    rate_limit: {{launches: 1, per_s: 3600, burst: 2}}
    actions: [{{action: run_execution, step: noop}}]
    response: {{json: {{run_id: "{{run_id}}"}}}}
""")
    launch = f"{url}/api/v0/launch/{trigger}/"
    first, second, third = (httpx.post(launch, content=b"{}") for _ in range(3))
    for accepted in (first, second):
        assert accepted.status_code == 202
        assert (
            await launched(kafka_bootstrap, namespace, accepted.json()["run_id"])
        ).trigger_id == trigger
    assert third.status_code == 429
    assert 3590 <= int(third.headers["retry-after"]) <= 3600
    [entry] = await trigger_log(kafka_bootstrap, namespace, trigger, 1)
    assert entry["outcome"] == "rate_limited"
    assert entry["status_code"] == 429


async def test_a_jwt_senders_subject_and_claims_travel_on_trigger_launched(
    gateway, kafka_bootstrap, namespace, tmp_path
):
    key = ec.generate_private_key(ec.SECP256R1())
    jwk = ECAlgorithm.to_jwk(key.public_key(), as_dict=True) | {"kid": "k1"}
    (tmp_path / "jwks.json").write_text(json.dumps({"keys": [jwk]}))
    trigger = unique("jwt")
    url = gateway(f"""
  - id: {trigger}
    title: Tokens from the identity provider
    conditions:
      - {{type: jwt, algorithms: [ES256], jwks_file: jwks.json, issuer: https://idp.example,
         audience: hookrun, leeway_s: 5}}
    actions: [{{action: run_execution, step: noop}}]
    response: {{json: {{run_id: "{{run_id}}"}}}}
""")
    claims = {
        "sub": "svc-deploy",
        "iss": "https://idp.example",
        "aud": "hookrun",
        "exp": int(time.time()) + 60,
        "scope": "launch",
    }
    token = jwt.encode(claims, key, algorithm="ES256", headers={"kid": "k1"})
    launch = f"{url}/api/v0/launch/{trigger}/"
    r = httpx.post(launch, content=b"{}", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 202, r.text
    event = await launched(kafka_bootstrap, namespace, r.json()["run_id"])
    assert event.account == "svc-deploy"
    assert event.account_metadata == {k: v for k, v in claims.items() if k != "sub"}
    assert event.request.headers["authorization"] == "[redacted]"

    wrong_audience = jwt.encode(
        claims | {"aud": "other"}, key, algorithm="ES256", headers={"kid": "k1"}
    )
    r = httpx.post(launch, content=b"{}", headers={"Authorization": f"Bearer {wrong_audience}"})
    assert r.status_code == 400
    [entry] = await trigger_log(kafka_bootstrap, namespace, trigger, 1)
    assert entry["reason"] == "conditions[0] (jwt): invalid token: Audience doesn't match"


async def test_a_v1a_signed_launch_is_accepted_with_its_webhook_id_as_delivery_id(
    gateway, kafka_bootstrap, namespace
):
    key = Ed25519PrivateKey.generate()
    whpk = "whpk_" + base64.b64encode(key.public_key().public_bytes_raw()).decode()
    trigger = unique("v1a")
    url = gateway(f"""
  - id: {trigger}
    title: Asymmetric Standard Webhooks
    conditions: [{{type: standard_webhooks, public_key: "{whpk}"}}]
    actions: [{{action: run_execution, step: noop}}]
    response: {{json: {{run_id: "{{run_id}}"}}}}
""")
    body = b'{"type": "contact.created"}'
    msg_id = f"msg_{uuid.uuid4().hex}"
    timestamp = str(int(time.time()))
    signature = key.sign(f"{msg_id}.{timestamp}.".encode() + body)
    headers = {
        "webhook-id": msg_id,
        "webhook-timestamp": timestamp,
        "webhook-signature": "v1a," + base64.b64encode(signature).decode(),
    }
    launch = f"{url}/api/v0/launch/{trigger}/"
    r = httpx.post(launch, content=body, headers=headers)
    assert r.status_code == 202, r.text
    event = await launched(kafka_bootstrap, namespace, r.json()["run_id"])
    assert event.delivery_id == msg_id
    assert event.request.headers["webhook-signature"] == "[redacted]"
    # the same delivery again is the same run; a changed body is refused
    assert httpx.post(launch, content=body, headers=headers).json() == r.json()
    assert httpx.post(launch, content=body + b" ", headers=headers).status_code == 400


async def test_provider_presets_launch_with_the_providers_delivery_id(
    gateway, kafka_bootstrap, namespace
):
    gitlab, shopify = unique("gitlab"), unique("shopify")
    url = gateway(f"""
  - id: {gitlab}
    title: GitLab pushes
    conditions: [{{preset: gitlab, secret: gl-token}}]
    actions: [{{action: run_execution, step: noop}}]
    response: {{json: {{run_id: "{{run_id}}"}}}}
  - id: {shopify}
    title: Shopify orders
    conditions: [{{preset: shopify, secret: shpss_client_secret}}]
    actions: [{{action: run_execution, step: noop}}]
    response: {{json: {{run_id: "{{run_id}}"}}}}
""")
    body = b'{"object_kind": "push"}'
    event_uuid = str(uuid.uuid4())
    headers = {"X-Gitlab-Token": "gl-token", "X-Gitlab-Event-UUID": event_uuid}
    first = httpx.post(f"{url}/api/v0/launch/{gitlab}/", content=body, headers=headers)
    assert first.status_code == 202, first.text
    event = await launched(kafka_bootstrap, namespace, first.json()["run_id"])
    assert event.delivery_id == event_uuid
    assert event.request.headers["x-gitlab-token"] == "[redacted]"
    again = httpx.post(f"{url}/api/v0/launch/{gitlab}/", content=body, headers=headers)
    assert again.json() == first.json()

    order = b'{"id": 820982911946154508}'
    digest = hmac.new(b"shpss_client_secret", order, hashlib.sha256).digest()
    webhook_id = str(uuid.uuid4())
    signed = {
        "X-Shopify-Hmac-Sha256": base64.b64encode(digest).decode(),
        "X-Shopify-Webhook-Id": webhook_id,
    }
    r = httpx.post(f"{url}/api/v0/launch/{shopify}/", content=order, headers=signed)
    assert r.status_code == 202, r.text
    assert (
        await launched(kafka_bootstrap, namespace, r.json()["run_id"])
    ).delivery_id == webhook_id
    forged = signed | {"X-Shopify-Hmac-Sha256": base64.b64encode(b"x" * 32).decode()}
    assert (
        httpx.post(f"{url}/api/v0/launch/{shopify}/", content=order, headers=forged).status_code
        == 400
    )
