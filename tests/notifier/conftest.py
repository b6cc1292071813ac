"""Factories for notifier unit tests: a config with subscriptions and RunFinished events."""

from __future__ import annotations

import asyncio
import base64
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from hookrun.config import parse_config
from hookrun.events.runs import RunFinished

WHSEC_A = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
WHSEC_B = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"

CONFIG = f"""
project: {{id: p-1, slug: demo, name: Demo}}
organization: {{id: o-1, slug: acme, title: Acme}}
environment: {{id: e-1, slug: dev, type: DEVELOPMENT}}
steps:
  - {{name: extract, command: ["true"]}}
triggers:
  - id: t1
    title: T1
    actions: [{{action: run_execution, step: extract}}]
    notifications:
      - {{url: "http://hooks.example.com/a", secret: "{WHSEC_A}"}}
      - {{url: "http://hooks.example.com/b", secret: ["{WHSEC_B}", "{WHSEC_A}"]}}
"""


@pytest.fixture
def config():
    return parse_config(CONFIG, "test.yaml")


def make_run_finished(ok: bool = True, **overrides: Any) -> RunFinished:
    t0 = datetime(2026, 11, 23, 18, 0, tzinfo=UTC)
    execution = {
        "execution_id": "ex-1",
        "step": "extract",
        "status": "SUCCESS" if ok else "FAILURE",
        "action_index": 0,
        "exit_code": 0 if ok else 3,
        "started_at": t0,
        "completed_at": t0 + timedelta(seconds=1),
        "duration_ms": 1000,
        "params": {"batch_size": 8},
        "output": {"records": 8} if ok else None,
        "error": None if ok else {"message": "exit code 3", "name": "ExitCode"},
    }
    data: dict[str, Any] = {
        "run_id": "run-1",
        "trigger_id": "t1",
        "config_version": "abc123def456",
        "status": "SUCCESS" if ok else "FAILURE",
        "started_at": t0,
        "completed_at": t0 + timedelta(seconds=2),
        "duration_ms": 2000,
        "execution_count": 1,
        "invocation": {"id": "run-1", "payload": {"batch_size": 8}, "timestamp": t0},
        "output": {"ex-1": {"records": 8}} if ok else None,
        "error": None if ok else {"message": "execution ex-1 failed", "name": "FAILURE"},
        "executions": [execution],
        "failed_execution_id": None if ok else "ex-1",
    }
    data.update(overrides)
    return RunFinished.model_validate(data)


NAMESPACE = "t-unit"


async def live_notifier(deps, publisher, concurrency: int = 4, broker=None, **options):
    """A Notifier on an in-memory broker whose one runs partition is assigned and live.

    Returns the notifier, the partition and the broker (its group is ``notifier``).
    ``options`` go to the Notifier.
    """
    from aiokafka import TopicPartition

    from hookrun.events.memory import MemoryBroker
    from hookrun.notifier.app import Notifier

    if broker is None:
        broker = MemoryBroker()
        broker.create_topics(NAMESPACE, partitions=1)
    notifier = Notifier(
        deps,
        consumer=broker.consumer("notifier"),
        publisher=publisher,
        bootstrap="127.0.0.1:1",
        namespace=NAMESPACE,
        concurrency=concurrency,
        **options,
    )
    await notifier.loop.start()
    async with asyncio.timeout(2):
        while not notifier.ready:
            await notifier.loop.step()
    return notifier, TopicPartition(notifier.topic, 0), broker


def make_whsk() -> tuple[str, str]:
    """A fresh ``whsk_`` secret key and its ``whpk_`` public key."""
    key = Ed25519PrivateKey.generate()
    public = key.public_key().public_bytes_raw()
    return (
        "whsk_" + base64.b64encode(key.private_bytes_raw()).decode(),
        "whpk_" + base64.b64encode(public).decode(),
    )


def verify_v1a(whpk: str, body: bytes, headers: dict[str, str], tolerance_s: int = 300) -> bool:
    """Verify as the Standard Webhooks specification describes it: the signed content is
    ``{webhook-id}.{webhook-timestamp}.{body}``, the header a space-separated list of
    ``<version>,<base64 signature>``, any ``v1a`` entry that the public key verifies passes,
    and the timestamp must be within the tolerance."""
    if abs(int(headers["webhook-timestamp"]) - time.time()) > tolerance_s:
        return False
    public = Ed25519PublicKey.from_public_bytes(base64.b64decode(whpk.removeprefix("whpk_")))
    content = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    for entry in headers["webhook-signature"].split(" "):
        version, _, sig = entry.partition(",")
        if version != "v1a":
            continue
        try:
            public.verify(base64.b64decode(sig), content)
        except InvalidSignature:
            continue
        return True
    return False
