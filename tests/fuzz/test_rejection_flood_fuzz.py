"""Floods of refused launches from a few sources: the trigger log stays bounded and counts them all.

Properties, for any mix of hostile, tampered and valid launches from a handful of addresses:
each source logs at most ``limit`` entries of an outcome one by one and one summary per window;
the counts of the entries add up to the launches refused (and to the redeliveries answered);
every run started has its TriggerLaunched and nothing else starts.
"""

from __future__ import annotations

import asyncio
from collections import Counter

from hypothesis import given
from hypothesis import strategies as st

from hookrun.config import InboundRequest, parse_config
from hookrun.config.addresses import source_address
from hookrun.events import InboundDeliveryRecorded, TriggerLaunched, TriggerLogged
from hookrun.gateway.adapters import FakeDeliveryIndex, FakeEventLog
from hookrun.gateway.handlers import Deps, launch
from tests.fuzz.strategies import CONFIG, Launch, fuzz, launches

FLOOD_EXAMPLES = 200
ADDRESSES = ("198.51.100.1", "198.51.100.2", "2001:db8::1", "2001:db8::2", "2001:db8:0:1::1")
_CONFIG = parse_config(CONFIG, "fuzz.yaml")


def _request(item: Launch, address: str) -> InboundRequest:
    headers = dict(item.headers)
    if item.body.content_type is not None:
        headers["content-type"] = item.body.content_type
    return InboundRequest(
        "POST",
        f"/api/v0/launch/{item.trigger_id}/",
        headers,
        query=item.query,
        body=item.body.data,
        remote_addr=address,
    )


async def _flood(flood: list[tuple[Launch, str]], limit: int) -> None:
    log = FakeEventLog()
    deps = Deps(
        config=_CONFIG,
        log=log,
        deliveries=FakeDeliveryIndex(),
        rejection_log_limit=limit,
        rejection_log_window_s=3600,
    )
    replies = Counter()
    for item, address in flood:
        replies[(await launch(item.trigger_id, _request(item, address), deps)).status] += 1
    deps.trigger_log.flush()

    runs = [e for e in log.events if isinstance(e, TriggerLaunched)]
    logged = [e for e in log.events if isinstance(e, TriggerLogged)]
    recorded = [e for e in log.events if isinstance(e, InboundDeliveryRecorded)]
    assert len(log.events) == len(runs) + len(logged) + len(recorded)
    assert set(replies) <= {202, 400}
    by_outcome = Counter()
    per_source = Counter()
    for entry in logged:
        assert entry.count >= 1
        by_outcome[entry.outcome] += entry.count
        trigger = entry.trigger_id if entry.trigger_id in deps.triggers else ""
        per_source[(entry.outcome, source_address(entry.remote_addr), trigger)] += 1
    assert by_outcome["rejected"] == replies[400]
    assert by_outcome["duplicate"] == replies[202] - len(runs)
    assert all(n <= limit + 1 for n in per_source.values()), per_source
    assert len(logged) <= len(per_source) * (limit + 1)


@fuzz(FLOOD_EXAMPLES)
@given(
    flood=st.lists(
        st.tuples(launches(), st.sampled_from(ADDRESSES)), min_size=1, max_size=20
    ).flatmap(lambda base: st.integers(1, 8).map(lambda times: base * times)),
    limit=st.integers(1, 6),
)
def test_a_flood_of_refused_launches_is_bounded_in_the_trigger_log_and_fully_counted(
    flood: list[tuple[Launch, str]], limit: int
) -> None:
    asyncio.run(_flood(flood, limit))
