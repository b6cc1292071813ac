"""A flood of refused launches from one source is counted in the trigger log, not stored one by one."""

from __future__ import annotations

import asyncio
import hashlib
import hmac

import pytest

from hookrun.config import InboundRequest, parse_config
from hookrun.config.addresses import source_address
from hookrun.events import TriggerLaunched, TriggerLogged
from hookrun.gateway.adapters import FakeDeliveryIndex, FakeEventLog
from hookrun.gateway.handlers import Deps, launch
from hookrun.gateway.sampling import TriggerLogSampler

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
  - id: other
    title: Another
    conditions: [{type: static_secret, header: X-Token, secret: tok}]
    actions: [{action: run_execution, step: noop}]
"""


def forged(address: str = "198.51.100.7", trigger: str = "gh") -> InboundRequest:
    headers = {"X-Hub-Signature-256": "sha256=" + "0" * 64}
    path = f"/api/v0/launch/{trigger}/"
    return InboundRequest("POST", path, headers, body=b"{}", remote_addr=address)


def logged(log: FakeEventLog) -> list[TriggerLogged]:
    return [e for e in log.events if isinstance(e, TriggerLogged)]


def deps_with(log: FakeEventLog, *, limit: int = 20, window_s: float = 60) -> Deps:
    return Deps(
        config=parse_config(CONFIG, "t.yaml"),
        log=log,
        deliveries=FakeDeliveryIndex(),
        rejection_log_limit=limit,
        rejection_log_window_s=window_s,
    )


async def test_a_flood_of_rejections_from_one_source_is_logged_up_to_the_limit_then_counted():
    log = FakeEventLog()
    deps = deps_with(log, limit=20)
    for _ in range(1000):
        reply = await launch("gh", forged(), deps)
        assert reply.status == 400
    assert len(logged(log)) == 20
    deps.trigger_log.flush()
    entries = logged(log)
    assert len(entries) == 21
    assert sum(e.count for e in entries) == 1000
    summary = entries[-1]
    assert summary.count == 980
    assert summary.outcome == "rejected"
    assert summary.trigger_id == "gh"
    assert summary.remote_addr == "198.51.100.7"
    assert summary.reason.startswith("980 more rejected launches from 198.51.100.7 within 60 s")
    assert summary.reason.endswith("signature mismatch")


async def test_the_window_ends_on_its_own_and_the_next_window_logs_again():
    log = FakeEventLog()
    deps = deps_with(log, limit=2, window_s=0.05)
    for _ in range(10):
        await launch("gh", forged(), deps)
    await asyncio.sleep(0.2)
    assert [e.count for e in logged(log)] == [1, 1, 8]
    await launch("gh", forged(), deps)
    assert [e.count for e in logged(log)] == [1, 1, 8, 1]


async def test_each_source_has_its_own_allowance():
    log = FakeEventLog()
    deps = deps_with(log, limit=3)
    for address in ("198.51.100.1", "198.51.100.2"):
        for trigger in ("gh", "other"):
            for _ in range(5):
                await launch(trigger, forged(address, trigger), deps)
    assert len(logged(log)) == 4 * 3
    deps.trigger_log.flush()
    summaries = [e for e in logged(log) if e.count > 1]
    assert sorted((e.remote_addr, e.trigger_id, e.count) for e in summaries) == [
        ("198.51.100.1", "gh", 2),
        ("198.51.100.1", "other", 2),
        ("198.51.100.2", "gh", 2),
        ("198.51.100.2", "other", 2),
    ]


async def test_unknown_trigger_ids_from_one_address_are_one_source():
    log = FakeEventLog()
    deps = deps_with(log, limit=5)
    for n in range(100):
        await launch(f"guess-{n}", forged(trigger=f"guess-{n}"), deps)
    deps.trigger_log.flush()
    entries = logged(log)
    assert len(entries) == 6
    assert sum(e.count for e in entries) == 100
    assert entries[-1].trigger_id == "guess-99"


def test_an_ipv6_client_is_its_slash_64():
    assert source_address("2001:db8:1:2:aaaa::1") == source_address("2001:db8:1:2:ffff::9")
    assert source_address("2001:db8:1:2::1") == "2001:db8:1:2::/64"
    assert source_address("2001:db8:1:3::1") != source_address("2001:db8:1:2::1")
    assert source_address("::ffff:192.0.2.1") == "192.0.2.1"
    assert source_address(None) == "unknown address"


async def test_past_the_sources_it_tallies_apart_the_others_share_one_tally():
    emitted: list[TriggerLogged] = []
    sampler = TriggerLogSampler(emitted.extend, {"gh"}, limit=1, window_s=60, max_sources=10)
    for n in range(500):
        for _ in range(2):
            sampler.offer(
                TriggerLogged(
                    trigger_id="gh",
                    outcome="rejected",
                    reason="signature mismatch",
                    status_code=400,
                    method="POST",
                    remote_addr=f"10.0.{n // 250}.{n % 250}",
                )
            )
    sampler.flush()
    assert len(emitted) <= 10 * 2 + 2
    assert sum(e.count for e in emitted) == 1000


async def test_redeliveries_are_sampled_like_rejections():
    log = FakeEventLog()
    deps = deps_with(log, limit=3)
    body = b"{}"
    digest = hmac.new(b"gh-secret", body, hashlib.sha256).hexdigest()
    headers = {"X-Hub-Signature-256": f"sha256={digest}", "X-GitHub-Delivery": "d-1"}
    request = InboundRequest(
        "POST", "/api/v0/launch/gh/", headers, body=body, remote_addr="10.1.1.1"
    )
    replies = [await launch("gh", request, deps) for _ in range(50)]
    assert {r.status for r in replies} == {202}
    assert len({r.body for r in replies}) == 1
    deps.trigger_log.flush()
    duplicates = [e for e in logged(log) if e.outcome == "duplicate"]
    assert len(duplicates) == 4
    assert sum(e.count for e in duplicates) == 49
    assert len([e for e in log.events if isinstance(e, TriggerLaunched)]) == 1


def test_a_limit_below_one_is_refused():
    with pytest.raises(ValueError, match="at least 1"):
        TriggerLogSampler(lambda entries: None, set(), limit=0)
