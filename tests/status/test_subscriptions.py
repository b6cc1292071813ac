"""The admin API's subscriptions, with a real SQLite store and fake Kafka adapters."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.fernet import Fernet
from fastapi.testclient import TestClient

from hookrun.config import parse_config
from hookrun.config.sealing import Sealer
from hookrun.events import (
    DeliveryAttempted,
    SubscriptionDeleted,
    SubscriptionDisabled,
    SubscriptionEnabled,
    SubscriptionHealthChanged,
    SubscriptionSaved,
)
from hookrun.events.subscriptions import subscription_id
from hookrun.gateway.adapters import FakeEventLog
from hookrun.status.adapters import FakeLogEnds
from hookrun.status.app import build
from hookrun.status.config import Settings

TOKEN = "admin-secret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
WHSEC = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

CONFIG = f"""
project: {{id: p-1, slug: demo, name: Demo}}
organization: {{id: o-1, slug: acme, title: Acme}}
environment: {{id: e-1, slug: dev, type: DEVELOPMENT}}
steps:
  - {{name: noop, command: ["true"]}}
triggers:
  - id: t1
    title: T1
    actions: [{{action: run_execution, step: noop}}]
    notifications:
      - {{url: "https://a.example.com/hook", secret: "{WHSEC}"}}
      - {{url: "https://b.example.com/hook", secret: "{WHSEC}"}}
      - {{url: "https://c.example.com/hook", secret: "{WHSEC}", enabled: false}}
"""
A, B, C = (subscription_id("t1", f"https://{h}.example.com/hook") for h in "abc")


@contextlib.asynccontextmanager
async def _no_lifespan(app):
    yield


@pytest.fixture
def app(store, feed):
    config = parse_config(CONFIG, "test.yaml")
    settings = Settings(hookrun_admin_token=TOKEN)
    event_log = FakeEventLog()
    application = build(settings, config, store=store, event_log=event_log, ends=FakeLogEnds())
    application.state.event_log = event_log
    application.state.deps.clock = NOW.timestamp
    application.state.feed = feed
    application.router.lifespan_context = _no_lifespan
    return application


@pytest.fixture
def client(app):
    with TestClient(app) as c:
        yield c


def attempt(sub: str, n: int, outcome: str, at: datetime, code: int | None) -> DeliveryAttempted:
    return DeliveryAttempted(
        run_id=f"run-{sub}-{n}",
        message_id=f"msg-{n}",
        subscription_id=sub,
        url="https://a.example.com/hook",
        attempt=1,
        outcome=outcome,
        status_code=code,
        occurred_at=at,
    )


class TestListSubscriptions:
    async def test_each_subscription_shows_its_state_success_rate_and_last_attempt(
        self, client, app
    ):
        await app.state.feed(
            [
                # outside the 24 h window: counts for the last attempt only if it is the last
                attempt(A, 1, "failed", NOW - timedelta(days=2), 500),
                attempt(A, 2, "succeeded", NOW - timedelta(hours=3), 200),
                attempt(A, 3, "succeeded", NOW - timedelta(hours=2), 204),
                attempt(A, 4, "failed", NOW - timedelta(hours=1), 503),
            ]
        )
        r = client.get("/api/v1/subscriptions", headers=AUTH)
        assert r.status_code == 200
        body = r.json()
        assert [s["id"] for s in body["subscriptions"]] == [A, B, C]
        a, b, c = body["subscriptions"]
        assert a["trigger_id"] == "t1" and a["url"] == "https://a.example.com/hook"
        assert (a["source"], a["state"], a["disabled"]) == ("config", "enabled", None)
        assert a["recent"] == {
            "window_s": 86400,
            "attempts": 3,
            "succeeded": 2,
            "success_rate": 0.6667,
        }
        assert a["last_attempt"] == {
            "at": "2026-12-05T11:00:00.000000Z",
            "outcome": "failed",
            "status_code": 503,
        }
        # never attempted: no rate rather than a made-up one
        assert b["recent"]["success_rate"] is None and b["last_attempt"] is None
        assert c["state"] == "disabled" and c["disabled"]["cause"] == "config"

    async def test_a_wider_window_counts_older_attempts(self, client, app):
        await app.state.feed(
            [
                attempt(A, 1, "failed", NOW - timedelta(days=2), 500),
                attempt(A, 2, "succeeded", NOW - timedelta(hours=3), 200),
            ]
        )
        body = client.get(
            "/api/v1/subscriptions", params={"window_s": 3 * 86400}, headers=AUTH
        ).json()
        assert body["subscriptions"][0]["recent"]["attempts"] == 2
        assert (
            client.get("/api/v1/subscriptions", params={"window_s": 1}, headers=AUTH).status_code
            == 422
        )

    def test_a_subscription_disabled_by_a_410_shows_why(self, client, app):
        deps = app.state.deps
        deps.subscriptions.apply(
            SubscriptionDisabled(
                subscription_id=B,
                trigger_id="t1",
                url="https://b.example.com/hook",
                reason="410 Gone on attempt 1 of msg-1",
                config_version=deps.config.config_version,
                occurred_at=NOW,
            )
        )
        b = client.get("/api/v1/subscriptions", headers=AUTH).json()["subscriptions"][1]
        assert b["state"] == "disabled"
        assert b["disabled"] == {
            "cause": "gone",
            "reason": "410 Gone on attempt 1 of msg-1",
            "at": "2026-12-05T12:00:00.000000Z",
        }

    def test_without_the_admin_token_is_401(self, client):
        assert client.get("/api/v1/subscriptions").status_code == 401


def disable(app, sid: str, cause: str = "gone") -> None:
    app.state.deps.subscriptions.apply(
        SubscriptionDisabled(
            subscription_id=sid,
            trigger_id="t1",
            url="https://b.example.com/hook",
            reason="410 Gone on attempt 1 of msg-1",
            config_version=app.state.deps.config.config_version,
            cause=cause,
        )
    )


class TestEnable:
    def test_a_410_disabled_subscription_is_enabled_again(self, client, app):
        disable(app, B)
        r = client.post(f"/api/v1/subscriptions/{B}/enable", headers=AUTH)
        assert r.status_code == 200
        assert (r.json()["id"], r.json()["state"], r.json()["disabled"]) == (B, "enabled", None)
        [event] = app.state.event_log.events
        assert isinstance(event, SubscriptionEnabled) and event.subscription_id == B
        listed = client.get("/api/v1/subscriptions", headers=AUTH).json()["subscriptions"]
        assert listed[1]["state"] == "enabled"

    def test_a_failing_one_shows_since_when_and_enabling_forgets_it(self, client, app):
        deps = app.state.deps
        deps.subscriptions.apply(
            SubscriptionHealthChanged(
                subscription_id=A, trigger_id="t1", failing_since=NOW, exhausted_in_row=3
            )
        )
        disable(app, A, cause="failing")
        a = client.get("/api/v1/subscriptions", headers=AUTH).json()["subscriptions"][0]
        assert a["disabled"]["cause"] == "failing"
        assert (a["failing_since"], a["exhausted_in_row"]) == ("2026-12-05T12:00:00.000000Z", 3)
        a = client.post(f"/api/v1/subscriptions/{A}/enable", headers=AUTH).json()
        assert (a["state"], a["failing_since"], a["exhausted_in_row"]) == ("enabled", None, 0)

    def test_one_disabled_in_the_config_file_is_the_files_to_change(self, client, app):
        r = client.post(f"/api/v1/subscriptions/{C}/enable", headers=AUTH)
        assert r.status_code == 409 and "config file" in r.json()["error"]
        assert app.state.event_log.events == []

    def test_an_unknown_subscription_is_404(self, client):
        r = client.post("/api/v1/subscriptions/t1:nope/enable", headers=AUTH)
        assert (r.status_code, r.json()) == (404, {"error": "subscription not found"})

    def test_kafka_down_is_503_and_changes_nothing(self, client, app):
        disable(app, B)
        app.state.event_log.down = True
        r = client.post(f"/api/v1/subscriptions/{B}/enable", headers=AUTH)
        assert r.status_code == 503 and "retry-after" in r.headers
        assert app.state.deps.subscriptions.disabled


class TestManagedAtRunTime:
    def create(self, client, **body):
        return client.post("/api/v1/subscriptions", json={"trigger_id": "t1", **body}, headers=AUTH)

    def test_a_subscription_made_through_the_api_is_listed_and_its_secret_shown_once(
        self, client, app
    ):
        r = self.create(
            client,
            url="https://d.example.com/hook",
            statuses=["FAILURE"],
            headers={"X-Env": "${env:HOOK_ENV}"},
        )
        assert r.status_code == 201, r.text
        made = r.json()
        assert made["id"].startswith("t1:sub_") and made["source"] == "api"
        assert made["secret"].startswith("whsec_") and made["signatures"] == ["v1"]
        assert (made["statuses"], made["headers"]) == (["FAILURE"], ["X-Env"])
        [saved] = app.state.event_log.events
        assert isinstance(saved, SubscriptionSaved) and saved.key == f"{made['id']}/definition"
        assert saved.secrets[0].secret == made["secret"]
        listed = client.get("/api/v1/subscriptions", headers=AUTH).text
        assert made["id"] in listed and made["secret"] not in listed and "whsec_" not in listed

    def test_a_v1a_subscription_gets_a_whsk_secret_and_the_receivers_whpk_key(self, client):
        made = self.create(client, url="https://d.example.com/hook", signature="v1a").json()
        assert made["secret"].startswith("whsk_") and made["public_key"].startswith("whpk_")
        assert made["signatures"] == ["v1a"]

    @pytest.mark.parametrize(
        ("body", "error"),
        [
            ({"url": "ftp://d.example.com"}, "url: must be an http:// or https:// URL"),
            ({"url": "https://d.example.com", "statuses": ["DONE"]}, "statuses.0: "),
            (
                {"url": "https://d.example.com", "headers": {"webhook-signature": "x"}},
                "headers: header webhook-signature may not be set",
            ),
            ({"url": "https://d.example.com", "signature": "v2"}, "signature: must be"),
            ({"url": "https://d.example.com", "secret": "whsec_x"}, "secret: not a field"),
            ({"url": "https://d.example.com", "trigger_id": "nope"}, "trigger_id: no such trigger"),
        ],
    )
    def test_a_bad_definition_is_400_naming_the_field(self, client, app, body, error):
        r = self.create(client, **body)
        assert r.status_code == 400 and r.json()["error"].startswith(error), r.text
        assert app.state.event_log.events == []

    def test_it_can_be_changed_and_removed_but_config_file_ones_cannot(self, client, app):
        made = self.create(client, url="https://d.example.com/hook").json()
        sid = made["id"]
        r = client.patch(
            f"/api/v1/subscriptions/{sid}", json={"statuses": ["TIMED_OUT"]}, headers=AUTH
        )
        assert r.status_code == 200 and r.json()["statuses"] == ["TIMED_OUT"]
        assert r.json()["url"] == "https://d.example.com/hook" and "secret" not in r.json()
        changed = app.state.event_log.events[-1]
        assert changed.secrets[0].secret == made["secret"]  # the secret stays
        r = client.patch(
            f"/api/v1/subscriptions/{sid}", json={"statuses": None, "headers": None}, headers=AUTH
        )
        assert (r.status_code, r.json()["statuses"], r.json()["headers"]) == (200, None, [])
        for method in ("patch", "delete"):
            r = getattr(client, method)(
                f"/api/v1/subscriptions/{A}",
                headers=AUTH,
                **({"json": {"url": "https://x.example.com"}} if method == "patch" else {}),
            )
            assert r.status_code == 409 and "config file" in r.json()["error"]
        assert (
            client.post(f"/api/v1/subscriptions/{A}/rotate-secret", headers=AUTH).status_code == 409
        )
        assert client.delete(f"/api/v1/subscriptions/{sid}", headers=AUTH).status_code == 204
        assert isinstance(app.state.event_log.events[-1], SubscriptionDeleted)
        ids = [
            s["id"]
            for s in client.get("/api/v1/subscriptions", headers=AUTH).json()["subscriptions"]
        ]
        assert ids == [A, B, C]
        assert client.delete(f"/api/v1/subscriptions/{sid}", headers=AUTH).status_code == 404

    def test_rotating_keeps_the_old_secret_signing_for_24_hours(self, client, app):
        made = self.create(client, url="https://d.example.com/hook").json()
        r = client.post(f"/api/v1/subscriptions/{made['id']}/rotate-secret", headers=AUTH)
        assert r.status_code == 200
        rotated = r.json()
        assert rotated["secret"].startswith("whsec_") and rotated["secret"] != made["secret"]
        assert rotated["previous_secret_expires_at"] == "2026-12-06T12:00:00.000000Z"
        saved = app.state.event_log.events[-1]
        assert [(s.secret, s.expires_at) for s in saved.secrets] == [
            (rotated["secret"], None),
            (made["secret"], NOW + timedelta(days=1)),
        ]
        # a day later, a second rotation drops the expired one
        app.state.deps.clock = (NOW + timedelta(days=1, seconds=1)).timestamp
        again = client.post(
            f"/api/v1/subscriptions/{made['id']}/rotate-secret", headers=AUTH
        ).json()
        assert [s.secret for s in app.state.event_log.events[-1].secrets] == [
            again["secret"],
            rotated["secret"],
        ]


def test_with_a_secrets_key_the_topic_holds_the_secret_sealed(client, app):
    key = Fernet.generate_key().decode()
    app.state.deps.sealer = Sealer(key)
    made = client.post(
        "/api/v1/subscriptions",
        json={"trigger_id": "t1", "url": "https://d.example.com/hook"},
        headers=AUTH,
    ).json()
    [saved] = app.state.event_log.events
    stored = saved.secrets[0].secret
    assert stored.startswith("sealed:") and made["secret"] not in stored
    assert Sealer(key).unseal(stored) == made["secret"]
    # a change and a rotation keep working on sealed secrets
    patched = client.patch(
        f"/api/v1/subscriptions/{made['id']}", json={"statuses": ["FAILURE"]}, headers=AUTH
    )
    assert patched.status_code == 200 and patched.json()["signatures"] == ["v1"]
    rotated = client.post(f"/api/v1/subscriptions/{made['id']}/rotate-secret", headers=AUTH).json()
    opened = [Sealer(key).unseal(s.secret) for s in app.state.event_log.events[-1].secrets]
    assert opened == [rotated["secret"], made["secret"]]
