"""Run info and admin routes with a real SQLite store and fake Kafka adapters."""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import time

import orjson
import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from hookrun.events import (
    RedeliveryRequested,
    RunCancelRequested,
    RunStatus,
    SubscriptionDisabled,
    SubscriptionEnabled,
    SubscriptionSaved,
    TriggerLaunched,
    topics,
)
from hookrun.gateway.adapters import FakeEventLog
from hookrun.status.adapters import FakeLogEnds
from hookrun.status.app import build
from hookrun.status.config import Settings
from tests.status.factories import launched, run_events

TOKEN = "admin-secret"


@pytest.fixture
def app(config, store, feed):
    event_log = FakeEventLog()
    ends = FakeLogEnds()
    settings = Settings(hookrun_admin_token=TOKEN, hookrun_status_catch_up_timeout_s=0.2)
    application = build(settings, config, store=store, event_log=event_log, ends=ends)
    application.state.feed, application.state.event_log, application.state.ends = (
        feed,
        event_log,
        ends,
    )
    return application


def test_a_fake_event_log_without_fake_log_ends_is_refused(config, store):
    # Half fakes would read log ends from a broker at the default address, wherever one runs.
    with pytest.raises(TypeError, match="both event_log and ends"):
        build(Settings(), config, store=store, event_log=FakeEventLog())


@pytest.fixture
def client(app):
    # the store fixture is opened already; the lifespan opening it again would leak a connection
    app.router.lifespan_context = _no_lifespan
    with TestClient(app) as c:
        yield c


import contextlib  # noqa: E402


@contextlib.asynccontextmanager
async def _no_lifespan(app):
    yield


def subscribe(app, trigger_id: str = "tok", **definition) -> None:
    """Give the trigger a subscription (``<trigger>:s``), as hookrun.subscriptions would."""
    app.state.deps.subscriptions.apply(
        SubscriptionSaved(
            subscription_id=f"{trigger_id}:s",
            trigger_id=trigger_id,
            url="https://hooks.example.com/runs",
            secrets=[],
            **definition,
        )
    )


def gh_sig(body: bytes) -> dict[str, str]:
    return {
        "X-Hub-Signature-256": "sha256=" + hmac.new(b"gh-secret", body, hashlib.sha256).hexdigest()
    }


async def test_get_with_a_static_secret_answers_run_info(client, app):
    run = launched("tok")
    await app.state.feed([run, *run_events(run, [RunStatus.SUCCESS])])
    r = client.get(
        "/api/v0/launch/tok/run/", params={"run_id": run.run_id}, headers={"X-Token": "tok"}
    )
    assert r.status_code == 200
    assert r.json() == {
        "status": "completed",
        "result": [
            {
                "action": "run_execution",
                "execution_step": "noop",
                "execution_id": f"{run.run_id}-x0",
            }
        ],
    }


async def test_post_form_and_json_signed_with_hmac(client, app):
    run = launched("gh")
    await app.state.feed([run])
    form = f"run_id={run.run_id}".encode()
    r = client.post(
        "/api/v0/launch/gh/run/",
        content=form,
        headers={**gh_sig(form), "content-type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 200 and r.json()["status"] == "pending"
    body = orjson.dumps({"run_id": run.run_id})
    r = client.post(
        "/api/v0/launch/gh/run/",
        content=body,
        headers={**gh_sig(body), "content-type": "application/json"},
    )
    assert r.status_code == 200


@pytest.mark.parametrize(
    ("path", "headers"),
    [
        ("/api/v0/launch/tok/run/", {"X-Token": "wrong"}),
        ("/api/v0/launch/tok/run/", {}),
        ("/api/v0/launch/nope/run/", {"X-Token": "tok"}),
        ("/api/v0/launch/disabled-one/run/", {}),
        ("/api/v0/launch/gh/run/", {"X-Hub-Signature-256": "sha256=00"}),
    ],
)
async def test_auth_failures_get_one_uniform_400(client, app, path, headers):
    run = launched("tok")
    await app.state.feed([run])
    r = client.get(path, params={"run_id": run.run_id}, headers=headers)
    assert (r.status_code, r.json()) == (400, {"error": "request rejected"})


class TestRunIdOfTriggersThatSignTheBody:
    """An empty body's signature is one constant per secret: anyone who saw it could replay it."""

    @pytest.fixture(autouse=True)
    def _info_logs(self, caplog):
        caplog.set_level(logging.INFO, logger="hookrun.status.handlers")

    async def test_a_replayed_empty_body_signature_with_a_run_id_in_the_query_reveals_nothing(
        self, client, app, caplog
    ):
        run = launched("gh")
        await app.state.feed([run, *run_events(run, [RunStatus.SUCCESS])])
        for method in ("POST", "GET"):
            r = client.request(
                method,
                "/api/v0/launch/gh/run/",
                params={"run_id": run.run_id},
                headers=gh_sig(b""),
            )
            assert (r.status_code, r.json()) == (400, {"error": "request rejected"}), method
        assert "run_id in the query string" in caplog.text

    async def test_a_run_id_in_the_query_is_refused_beside_a_signed_body_too(
        self, client, app, caplog
    ):
        mine, other = launched("gh"), launched("gh")
        await app.state.feed([mine, other])
        body = orjson.dumps({"run_id": mine.run_id})
        r = client.post(
            "/api/v0/launch/gh/run/",
            params={"run_id": other.run_id},
            content=body,
            headers={**gh_sig(body), "content-type": "application/json"},
        )
        assert (r.status_code, r.json()) == (400, {"error": "request rejected"})
        assert "run_id in the query string" in caplog.text

    def test_a_get_gets_the_uniform_400_as_it_has_no_body_to_sign(self, client, caplog):
        r = client.get("/api/v0/launch/gh/run/", headers=gh_sig(b""))
        assert (r.status_code, r.json()) == (400, {"error": "request rejected"})
        assert "GET has no body to sign" in caplog.text


def sw_sig(body: bytes, timestamp: str) -> dict[str, str]:
    signed = f"msg_1.{timestamp}.".encode() + body
    sig = base64.b64encode(hmac.digest(b"sw-secret", signed, "sha256")).decode()
    return {"webhook-id": "msg_1", "webhook-timestamp": timestamp, "webhook-signature": f"v1,{sig}"}


@pytest.mark.parametrize(
    "timestamp", ["9" * 5000, "1" + "0" * 400], ids=["5000-digits", "over-float-range"]
)
async def test_a_timestamp_of_hundreds_of_digits_is_a_failed_condition_not_a_500(
    client, app, timestamp
):
    run = launched("sw")
    await app.state.feed([run])
    body = orjson.dumps({"run_id": run.run_id})
    r = client.post("/api/v0/launch/sw/run/", content=body, headers=sw_sig(body, timestamp))
    assert (r.status_code, r.json()) == (400, {"error": "request rejected"})
    # the same request with a current timestamp is answered
    r = client.post(
        "/api/v0/launch/sw/run/", content=body, headers=sw_sig(body, str(int(time.time())))
    )
    assert r.status_code == 200


def test_a_content_length_of_thousands_of_digits_is_over_the_limit(client):
    r = client.post(
        "/api/v0/launch/tok/run/",
        content=b"x",
        headers={"X-Token": "tok", "content-length": "9" * 5000},
    )
    assert r.status_code == 413


async def test_unknown_runs_and_other_triggers_runs_are_404(client, app):
    run = launched("other")
    await app.state.feed([run])
    for run_id in (run.run_id, "no-such-run"):
        r = client.get(
            "/api/v0/launch/tok/run/", params={"run_id": run_id}, headers={"X-Token": "tok"}
        )
        assert (r.status_code, r.json()) == (404, {"error": "run not found"})


async def test_a_lagging_projection_answers_503_not_404(client, app):
    app.state.ends.ends[(topics.RUNS, 0)] = 10**6  # the log holds records the store never gets
    r = client.get("/api/v0/launch/tok/run/", params={"run_id": "x"}, headers={"X-Token": "tok"})
    assert r.status_code == 503 and "retry-after" in r.headers


class TestAdmin:
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {TOKEN}"}

    def test_without_a_token_is_401(self, client):
        assert client.get("/api/v1/runs").status_code == 401
        assert (
            client.get("/api/v1/runs", headers={"Authorization": "Bearer nope"}).status_code == 401
        )

    def test_unset_token_disables_the_admin_api(self, config, store):
        application = build(
            Settings(), config, store=store, event_log=FakeEventLog(), ends=FakeLogEnds()
        )
        application.router.lifespan_context = _no_lifespan
        with TestClient(application) as c:
            r = c.get("/api/v1/runs", headers=self.auth())
        assert (r.status_code, r.json()) == (503, {"error": "admin API disabled"})

    async def test_list_filter_detail_events(self, client, app):
        ok, bad = launched("tok"), launched("other")
        await app.state.feed(
            [ok, *run_events(ok, [RunStatus.SUCCESS]), bad, *run_events(bad, [RunStatus.FAILURE])]
        )
        runs = client.get("/api/v1/runs", params={"status": "FAILURE"}, headers=self.auth()).json()[
            "runs"
        ]
        assert [r["run_id"] for r in runs] == [bad.run_id]
        runs = client.get(
            "/api/v1/runs", params={"status": "completed", "trigger_id": "tok"}, headers=self.auth()
        ).json()["runs"]
        assert [r["run_id"] for r in runs] == [ok.run_id]
        detail = client.get(f"/api/v1/runs/{ok.run_id}", headers=self.auth()).json()
        assert detail["executions"][0]["exit_code"] == 0
        events = client.get(f"/api/v1/runs/{ok.run_id}/events", headers=self.auth()).json()[
            "events"
        ]
        assert events[0]["type"] == "hookrun.trigger.launched" and events[0]["specversion"] == "1.0"
        assert client.get("/api/v1/runs/nope", headers=self.auth()).status_code == 404

    async def test_cancel_and_redeliver_append_events(self, client, app):
        subscribe(app)
        running, done = launched("tok"), launched("tok")
        await app.state.feed([running, done, *run_events(done, [RunStatus.SUCCESS])])
        assert (
            client.post(f"/api/v1/runs/{running.run_id}/cancel", headers=self.auth()).status_code
            == 202
        )
        assert (
            client.post(f"/api/v1/runs/{done.run_id}/cancel", headers=self.auth()).status_code
            == 409
        )
        assert (
            client.post(f"/api/v1/runs/{done.run_id}/redeliver", headers=self.auth()).status_code
            == 202
        )
        assert (
            client.post(f"/api/v1/runs/{running.run_id}/redeliver", headers=self.auth()).status_code
            == 409
        )
        [cancel, redeliver] = app.state.event_log.events
        assert isinstance(cancel, RunCancelRequested) and cancel.run_id == running.run_id
        assert isinstance(redeliver, RedeliveryRequested) and redeliver.run_id == done.run_id

    async def test_cancel_and_redeliver_carry_the_runs_trace_context(self, client, app):
        subscribe(app)
        trace = {"traceparent": f"00-{'a' * 32}-{'b' * 16}-01", "tracestate": "vendor=1"}
        running, done = launched("tok", **trace), launched("tok", **trace)
        await app.state.feed([running, done, *run_events(done, [RunStatus.SUCCESS])])
        client.post(f"/api/v1/runs/{running.run_id}/cancel", headers=self.auth())
        client.post(f"/api/v1/runs/{done.run_id}/redeliver", headers=self.auth())
        [cancel, redeliver] = app.state.event_log.events
        for event in (cancel, redeliver):
            assert (event.traceparent, event.tracestate) == (trace["traceparent"], "vendor=1")

    async def test_a_redelivery_that_would_send_nothing_is_409_saying_why(self, client, app):
        done = launched("tok")
        await app.state.feed([done, *run_events(done, [RunStatus.SUCCESS])])

        def redeliver(**body):
            r = client.post(f"/api/v1/runs/{done.run_id}/redeliver", json=body, headers=self.auth())
            return r.status_code, r.json()

        def refused(why):
            return 409, {"error": f"nothing to redeliver: {why}"}

        assert redeliver() == refused("trigger tok has no subscription")
        subscribe(app, statuses=["FAILURE"])
        assert redeliver() == refused(
            "no enabled subscription of trigger tok has SUCCESS in its statuses"
        )
        assert redeliver(subscription_id="tok:nope") == refused(
            "tok:nope is not a subscription of trigger tok"
        )
        app.state.deps.subscriptions.apply(
            SubscriptionDisabled(
                subscription_id="tok:s",
                trigger_id="tok",
                url="https://hooks.example.com/runs",
                reason="410 Gone on attempt 1 of msg-1",
                config_version=app.state.deps.config.config_version,
            )
        )
        assert redeliver() == refused("every subscription of trigger tok is disabled")
        assert redeliver(subscription_id="tok:s") == refused(
            "subscription tok:s is disabled: 410 Gone on attempt 1 of msg-1"
        )
        assert app.state.event_log.events == []
        # named, an enabled one gets the run whatever its statuses, as the notifier sends it
        app.state.deps.subscriptions.apply(
            SubscriptionEnabled(subscription_id="tok:s", trigger_id="tok")
        )
        assert redeliver(subscription_id="tok:s")[0] == 202

    def test_test_launch_skips_conditions_and_sets_is_test(self, client, app):
        r = client.post("/api/v1/triggers/gh/test-launch", content=b'{"n": 2}', headers=self.auth())
        assert r.status_code == 202 and r.json()["isTest"] is True
        [event] = app.state.event_log.events
        assert isinstance(event, TriggerLaunched)
        assert (event.is_test, event.trigger_id, event.request.body()) == (True, "gh", b'{"n": 2}')
        assert event.request.headers["authorization"] == "[redacted]"
        assert (
            client.post("/api/v1/triggers/nope/test-launch", headers=self.auth()).status_code == 404
        )

    async def test_replay_launches_the_trigger_again_with_its_request_or_a_new_payload(
        self, client, app
    ):
        original = launched("gh", body=b'{"n": 1}', account="acct-1")
        await app.state.feed([original, *run_events(original, [RunStatus.SUCCESS])])
        url = f"/api/v1/runs/{original.run_id}/replay"
        same = client.post(url, headers=self.auth())
        edited = client.post(url, json={"payload": {"n": 5}}, headers=self.auth())
        assert same.status_code == edited.status_code == 202, edited.text
        assert same.json()["replay_of"] == edited.json()["replay_of"] == original.run_id
        [again, changed] = app.state.event_log.events
        assert isinstance(again, TriggerLaunched) and isinstance(changed, TriggerLaunched)
        assert [again.run_id, changed.run_id] == [same.json()["run_id"], edited.json()["run_id"]]
        assert (again.trigger_id, again.replay_of, again.is_test) == ("gh", original.run_id, False)
        assert again.account == "acct-1"
        assert again.request.body() == b'{"n": 1}'
        assert changed.request.payload() == {"n": 5}
        assert changed.request.content_type == "application/json"

        # the projection records both sides of the link
        await app.state.feed([again])
        detail = client.get(f"/api/v1/runs/{again.run_id}", headers=self.auth()).json()
        assert detail["replay_of"] == original.run_id and detail["replays"] == []
        detail = client.get(f"/api/v1/runs/{original.run_id}", headers=self.auth()).json()
        assert detail["replay_of"] is None and detail["replays"] == [again.run_id]

    async def test_replay_refuses_unknown_runs_and_bodies_that_are_not_objects(self, client, app):
        original = launched("gh")
        await app.state.feed([original])
        r = client.post("/api/v1/runs/nope/replay", headers=self.auth())
        assert (r.status_code, r.json()) == (404, {"error": "run not found"})
        url = f"/api/v1/runs/{original.run_id}/replay"
        assert client.post(url, content=b"[1]", headers=self.auth()).status_code == 400
        assert client.post(url).status_code == 401
        assert app.state.event_log.events == []

    def test_test_launch_refuses_a_body_nested_deeper_than_the_limit(self, client, app):
        deep = b'{"a":' * 65 + b"1" + b"}" * 65
        r = client.post("/api/v1/triggers/gh/test-launch", content=deep, headers=self.auth())
        assert r.status_code == 400
        assert r.json() == {"error": "JSON body nests deeper than HOOKRUN_MAX_JSON_DEPTH (64)"}
        assert app.state.event_log.events == []
        at_the_limit = b"[" * 64 + b"]" * 64
        r = client.post(
            "/api/v1/triggers/gh/test-launch", content=at_the_limit, headers=self.auth()
        )
        assert r.status_code == 202
        [event] = app.state.event_log.events
        assert event.request.body() == at_the_limit

    def test_test_launch_takes_its_depth_limit_from_the_setting(self, config, store):
        log = FakeEventLog()
        application = build(
            Settings(hookrun_admin_token=TOKEN, hookrun_max_json_depth=3),
            config,
            store=store,
            event_log=log,
            ends=FakeLogEnds(),
        )
        application.router.lifespan_context = _no_lifespan
        with TestClient(application) as c:
            r = c.post("/api/v1/triggers/gh/test-launch", content=b"[[[[]]]]", headers=self.auth())
        assert (r.status_code, r.json()) == (
            400,
            {"error": "JSON body nests deeper than HOOKRUN_MAX_JSON_DEPTH (3)"},
        )
        assert log.events == []

    def test_test_launch_takes_its_depth_limit_from_the_deps(self, client, app):
        app.state.deps.max_json_depth = 3
        r = client.post("/api/v1/triggers/gh/test-launch", content=b"[[[[]]]]", headers=self.auth())
        assert (r.status_code, r.json()) == (
            400,
            {"error": "JSON body nests deeper than HOOKRUN_MAX_JSON_DEPTH (3)"},
        )
        assert app.state.event_log.events == []

    def test_a_depth_limit_no_event_could_carry_is_refused_at_start(self):
        with pytest.raises(ValidationError, match="hookrun_max_json_depth"):
            Settings(hookrun_max_json_depth=250)

    def test_openapi_lists_the_admin_api(self, client):
        paths = client.get("/openapi.json").json()["paths"]
        assert (
            "/api/v1/runs/{run_id}/cancel" in paths and "/api/v0/launch/{trigger_id}/run/" in paths
        )

    def test_openapi_declares_every_admin_error_with_its_body(self, client):
        paths = client.get("/openapi.json").json()["paths"]
        cancel = paths["/api/v1/runs/{run_id}/cancel"]["post"]["responses"]
        assert {"202", "400", "401", "404", "409", "413", "503"} <= set(cancel)
        schema = cancel["409"]["content"]["application/json"]["schema"]
        assert schema["required"] == ["error"]
        for path, ops in paths.items():
            if path.startswith("/api/v1/"):
                for op in ops.values():
                    assert {"401", "503"} <= set(op["responses"]), path


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("mysql://admin:hunter2@db/x", "mysql://admin:***@db/x"),
        ("postgresql//admin:hunter2@db/x", "postgresql//admin:***@db/x"),
        ("postgres:admin:hunter2@db", "postgres:***@db"),
    ],
)
def test_an_invalid_database_url_is_refused_without_its_password(url, shown):
    from hookrun.status.app import open_store

    with pytest.raises(ValueError, match="HOOKRUN_DATABASE_URL") as refused:
        open_store(url)
    assert "hunter2" not in str(refused.value)
    assert repr(shown) in str(refused.value)
