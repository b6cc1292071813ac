"""Launch rules past the conditions, with fake adapters: filters, rate limits, JWT senders."""

import time
from pathlib import Path

import jwt
import pytest
from fastapi.testclient import TestClient

from hookrun.config import ConfigError, load_config, parse_config
from hookrun.events import TriggerLaunched, TriggerLogged
from hookrun.gateway.adapters import FakeDeliveryIndex, FakeEventLog
from hookrun.gateway.app import build
from hookrun.gateway.config import Settings
from tests.config.one_trigger import PREAMBLE

HEAD = PREAMBLE

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

    def make(triggers: str, settings: Settings | None = None, **deps):
        app = build(
            settings or Settings(),
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


LIMITED = """
  - id: limited
    title: Three launches per 30 s, two at once
    conditions: [{type: static_secret, header: X-Token, secret: tok}]
    rate_limit: {launches: 3, per_s: 30, burst: 2}
    actions: [{action: run_execution, step: noop}]
  - id: free
    title: No limit
    actions: [{action: run_execution, step: noop}]
"""


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class TestRateLimit:
    def launch(self, client, trigger="limited"):
        return client.post(f"/api/v0/launch/{trigger}/", content=b"{}", headers={"X-Token": "tok"})

    def test_a_flood_past_the_limit_is_sampled_like_other_rejections(self, make_client, log):
        client = make_client(LIMITED, Settings(hookrun_rejection_log_limit=2), monotonic=Clock())
        codes = [self.launch(client).status_code for _ in range(7)]
        assert codes == [202, 202] + [429] * 5
        assert [e.count for e in logged(log)] == [1, 1]
        client.app.state.deps.trigger_log.flush()
        summary = logged(log)[-1]
        assert (summary.outcome, summary.count) == ("rate_limited", 3)
        assert summary.reason.startswith("3 more rate_limited launches from testclient")

    def test_a_burst_passes_then_429_with_the_seconds_until_a_token(self, make_client, log):
        clock = Clock()
        client = make_client(LIMITED, monotonic=clock)
        assert [self.launch(client).status_code for _ in range(2)] == [202, 202]
        refused = self.launch(client)
        assert refused.status_code == 429
        # one token per 10 s, none left: the next one is 10 s away
        assert refused.headers["retry-after"] == "10"
        assert refused.json() == {"error": "rate limit exceeded, retry later"}
        assert len(launched(log)) == 2
        [entry] = logged(log)
        assert entry.outcome == "rate_limited"
        assert entry.status_code == 429
        assert "3 launches per 30 s (burst 2)" in entry.reason

        clock.now += 7.5
        assert self.launch(client).headers["retry-after"] == "3"  # rounded up from 2.5
        clock.now += 2.5
        assert self.launch(client).status_code == 202
        assert len(launched(log)) == 3

    def test_the_bucket_refills_to_the_burst_not_beyond(self, make_client, log):
        clock = Clock()
        client = make_client(LIMITED, monotonic=clock)
        clock.now += 3600
        codes = [self.launch(client).status_code for _ in range(3)]
        assert codes == [202, 202, 429]

    def test_a_redelivery_takes_no_token_and_gets_its_run_past_the_limit(self, make_client, log):
        client = make_client(LIMITED, monotonic=Clock())
        first, second = (
            client.post(
                "/api/v0/launch/limited/",
                content=b"{}",
                headers={"X-Token": "tok", "X-GitHub-Delivery": delivery},
            )
            for delivery in ("d-1", "d-2")
        )
        assert (first.status_code, second.status_code) == (202, 202)
        for _ in range(3):  # the sender retries d-1, unsure it arrived: its run, no token
            again = client.post(
                "/api/v0/launch/limited/",
                content=b"{}",
                headers={"X-Token": "tok", "X-GitHub-Delivery": "d-1"},
            )
            assert again.status_code == 202
            assert again.text == first.text
        assert self.launch(client).status_code == 429  # a new launch finds the bucket empty
        assert len(launched(log)) == 2

    def test_a_failed_condition_takes_no_token(self, make_client, log):
        client = make_client(LIMITED, monotonic=Clock())
        for _ in range(5):
            r = client.post("/api/v0/launch/limited/", content=b"{}", headers={"X-Token": "x"})
            assert r.status_code == 400
        assert self.launch(client).status_code == 202

    def test_other_triggers_are_not_limited(self, make_client, log):
        client = make_client(LIMITED, monotonic=Clock())
        codes = [client.post("/api/v0/launch/free/", content=b"{}").status_code for _ in range(5)]
        assert codes == [202] * 5

    @pytest.mark.parametrize(
        ("limit", "error"),
        [
            ("{launches: 0, per_s: 1}", "triggers[0].rate_limit.launches: input should be"),
            ("{launches: 1, per_s: 0}", "triggers[0].rate_limit.per_s: input should be greater"),
            ("{launches: 1, per_s: 1, burst: 0}", "triggers[0].rate_limit.burst: input should"),
            ("{launches: 1}", "triggers[0].rate_limit.per_s: field required"),
        ],
    )
    def test_a_bad_rate_limit_is_a_config_error_naming_the_field(self, limit, error):
        text = (
            HEAD
            + f"""
  - id: t
    title: T
    rate_limit: {limit}
    actions: [{{action: run_execution, step: noop}}]
"""
        )
        with pytest.raises(ConfigError) as exc:
            parse_config(text, "test.yaml")
        assert f"test.yaml: {error}" in str(exc.value)


JWT_SECRET = "j" * 48
JWT = f"""
  - id: jwt
    title: Senders with a token from our identity provider
    conditions: [{{type: jwt, secret: {JWT_SECRET}, algorithms: [HS256], issuer: idp}}]
    actions: [{{action: run_execution, step: noop}}]
"""


class TestJwt:
    def test_the_tokens_subject_and_claims_are_the_launchs_account(self, make_client, log):
        client = make_client(JWT)
        exp = int(time.time()) + 60
        token = jwt.encode({"sub": "alice", "iss": "idp", "exp": exp, "team": "ml"}, JWT_SECRET)
        r = client.post(
            "/api/v0/launch/jwt/", content=b"{}", headers={"Authorization": f"Bearer {token}"}
        )
        assert r.status_code == 202
        [event] = launched(log)
        assert event.account == "alice"
        assert event.account_metadata == {"iss": "idp", "exp": exp, "team": "ml"}
        assert event.request.headers["authorization"] == "[redacted]"

    def test_an_expired_token_is_the_uniform_400_and_the_log_says_why(self, make_client, log):
        client = make_client(JWT)
        token = jwt.encode({"sub": "a", "iss": "idp", "exp": int(time.time()) - 5}, JWT_SECRET)
        r = client.post(
            "/api/v0/launch/jwt/", content=b"{}", headers={"Authorization": f"Bearer {token}"}
        )
        assert r.status_code == 400
        assert r.json() == {"error": "launch rejected"}
        assert launched(log) == []
        [entry] = logged(log)
        assert entry.reason == "conditions[0] (jwt): invalid token: Signature has expired"


def test_the_examples_jwt_filtered_rate_limited_trigger_works_as_its_comments_say(log):
    config = load_config(Path(__file__).resolve().parents[2] / "examples" / "hookrun.yaml")
    app = build(Settings(), config, event_log=log, deliveries=FakeDeliveryIndex())
    claims = {"sub": "ci", "iss": "hookrun-demo-ci", "exp": int(time.time()) + 60}
    token = jwt.encode(claims, "demo-jwt-secret-of-at-least-32-bytes", algorithm="HS256")
    headers = {"Authorization": f"Bearer {token}"}
    url = "/api/v0/launch/extraction-on-main/"
    with TestClient(app) as client:
        main = client.post(
            url, content=b'{"ref": "refs/heads/main", "batch_size": 4}', headers=headers
        )
        assert main.status_code == 202
        assert launched(log)[0].account == "ci"
        draft = b'{"ref": "refs/heads/main", "draft": true, "batch_size": 4}'
        assert client.post(url, content=draft, headers=headers).json()["filtered"] is True
        other = b'{"ref": "refs/heads/dev", "batch_size": 4}'
        assert client.post(url, content=other, headers=headers).json()["filtered"] is True
        codes = [
            client.post(url, content=b'{"ref": "refs/heads/main"}', headers=headers).status_code
            for _ in range(5)
        ]
        assert codes == [202] * 4 + [429]
        assert client.post(url, content=b'{"ref": "refs/heads/main"}').status_code == 400
