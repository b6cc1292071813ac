"""Launch rules past the conditions, with fake adapters: filters, rate limits, JWT senders."""

import pytest
from fastapi.testclient import TestClient

from hookrun.config import parse_config
from hookrun.events import TriggerLaunched, TriggerLogged
from hookrun.gateway.adapters import FakeDeliveryIndex, FakeEventLog
from hookrun.gateway.app import build
from hookrun.gateway.config import Settings

HEAD = """
project: {id: p-1, slug: demo, name: Demo}
organization: {id: o-1, slug: acme, title: Acme}
environment: {id: e-1, slug: dev, type: DEVELOPMENT}
steps: [{name: noop, command: ["true"]}]
triggers:
"""

FILTERED = """
  - id: pushes
    title: Pushes to main
    conditions: [{type: static_secret, header: X-Token, secret: tok}]
    filter:
      - {path: headers.x-github-event, equals: push}
      - {path: payload.ref, in: [refs/heads/main]}
    actions: [{action: run_execution, step: noop}]
"""


@pytest.fixture
def log():
    return FakeEventLog()


@pytest.fixture
def make_client(log):
    clients = []

    def make(triggers: str, **deps):
        app = build(
            Settings(),
            parse_config(HEAD + triggers, "test.yaml"),
            event_log=log,
            deliveries=FakeDeliveryIndex(),
        )
        for name, value in deps.items():
            setattr(app.state.deps, name, value)
        client = TestClient(app)
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


def launched(log) -> list[TriggerLaunched]:
    return [e for e in log.events if isinstance(e, TriggerLaunched)]


def logged(log) -> list[TriggerLogged]:
    return [e for e in log.events if isinstance(e, TriggerLogged)]


class TestFilter:
    def test_a_matching_launch_starts_a_run(self, make_client, log):
        client = make_client(FILTERED)
        body = b'{"ref": "refs/heads/main"}'
        headers = {"X-Token": "tok", "X-GitHub-Event": "push"}
        r = client.post("/api/v0/launch/pushes/", content=body, headers=headers)
        assert r.status_code == 202
        assert len(launched(log)) == 1

    def test_a_launch_the_filter_leaves_out_is_200_filtered_with_no_run(self, make_client, log):
        client = make_client(FILTERED)
        body = b'{"ref": "refs/heads/dev"}'
        headers = {"X-Token": "tok", "X-GitHub-Event": "push"}
        r = client.post("/api/v0/launch/pushes/", content=body, headers=headers)
        assert r.status_code == 200
        assert r.json() == {"ok": True, "filtered": True}
        assert launched(log) == []
        [entry] = logged(log)
        assert entry.outcome == "filtered"
        assert entry.status_code == 200
        assert entry.reason == "filter[1] did not match: payload.ref in ['refs/heads/main']"

    def test_the_conditions_come_first_so_an_unauthenticated_sender_learns_nothing(
        self, make_client, log
    ):
        client = make_client(FILTERED)
        r = client.post("/api/v0/launch/pushes/", content=b"{}", headers={"X-Token": "bad"})
        assert r.status_code == 400
        [entry] = logged(log)
        assert entry.outcome == "rejected"

    def test_filtered_launches_count_in_the_metrics(self, make_client):
        client = make_client(FILTERED)
        client.post("/api/v0/launch/pushes/", content=b"{}", headers={"X-Token": "tok"})
        metrics = client.get("/metrics").text
        assert 'hookrun_launches_total{outcome="filtered",reason="",trigger="pushes"}' in metrics
