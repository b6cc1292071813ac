"""The launch endpoint with fake adapters: conditions, templating, limits, 503, dedupe."""

import base64
import hashlib
import hmac
import time

import orjson
import pytest
from fastapi.testclient import TestClient
from standardwebhooks import Webhook

from hookrun.config import parse_config
from hookrun.events import TriggerLaunched, TriggerLogged
from hookrun.gateway.adapters import FakeDeliveryIndex, FakeEventLog
from hookrun.gateway.app import build
from hookrun.gateway.config import Settings

WHSEC = "whsec_" + base64.b64encode(b"k" * 24).decode()
CONFIG = f"""
project: {{id: p-1, slug: demo, name: Demo}}
organization: {{id: o-1, slug: acme, title: Acme}}
environment: {{id: e-1, slug: dev, type: DEVELOPMENT}}
steps:
  - name: noop
    command: ["true"]
triggers:
  - id: gh
    title: GitHub
    conditions:
      - {{preset: github, secret: gh-secret}}
    actions: [{{action: run_execution, step: noop}}]
    response: {{text: "Created run {{run_id}}"}}
  - id: token
    title: Static token in a header
    conditions: [{{type: static_secret, header: X-Token, secret: tok}}]
    actions: [{{action: run_execution, step: noop}}]
    response:
      json: {{status: success, run_id: "{{run_id}}", nested: {{id: "{{run_id}}", list: ["run {{run_id}}", 3]}}}}
  - id: query
    title: Static token in the query
    conditions: [{{type: static_secret, query: token, secret: qtok}}]
    actions: [{{action: run_execution, step: noop}}]
  - id: sw
    title: Standard Webhooks
    conditions: [{{type: standard_webhooks, secret: "{WHSEC}", tolerance_s: 300}}]
    actions: [{{action: run_execution, step: noop}}]
  - id: b64
    title: HMAC sha512 base64 without prefix
    conditions: [{{type: hmac, header: X-Sig, secret: s, algorithm: sha512, encoding: base64}}]
    actions: [{{action: run_execution, step: noop}}]
  - id: sha1
    title: HMAC sha1 hex
    conditions: [{{type: hmac, header: X-Hub-Signature, secret: s1, algorithm: sha1, prefix: "sha1="}}]
    actions: [{{action: run_execution, step: noop}}]
  - id: disabled-one
    title: Disabled
    enabled: false
    conditions: []
    actions: [{{action: run_execution, step: noop}}]
"""

BODY = b'{"batch_size": 64, "note": "hello"}'


def github_sig(body: bytes, secret: str = "gh-secret") -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


@pytest.fixture
def log():
    return FakeEventLog()


@pytest.fixture
def deliveries():
    return FakeDeliveryIndex()


@pytest.fixture
def client(log, deliveries):
    settings = Settings(hookrun_max_body_bytes=1024)
    app = build(settings, parse_config(CONFIG, "test.yaml"), event_log=log, deliveries=deliveries)
    with TestClient(app) as c:
        yield c


def launched(log) -> list[TriggerLaunched]:
    return [e for e in log.events if isinstance(e, TriggerLaunched)]


def rejections(log) -> list[TriggerLogged]:
    return [e for e in log.events if isinstance(e, TriggerLogged)]


class TestAcceptedLaunch:
    def test_github_signature_is_accepted_and_answers_the_text_template(self, client, log):
        r = client.post(
            "/api/v0/launch/gh/", content=BODY, headers={"X-Hub-Signature-256": github_sig(BODY)}
        )
        assert r.status_code == 202
        assert r.headers["content-type"].startswith("text/plain")
        [event] = launched(log)
        assert r.text == f"Created run {event.run_id}"
        assert event.trigger_id == "gh"
        assert event.request.body() == BODY

    def test_json_response_has_the_run_id_in_every_string_at_any_depth(self, client, log):
        r = client.post("/api/v0/launch/token/", content=b"x", headers={"X-Token": "tok"})
        assert r.status_code == 202
        run_id = launched(log)[0].run_id
        assert r.json() == {
            "status": "success",
            "run_id": run_id,
            "nested": {"id": run_id, "list": [f"run {run_id}", 3]},
        }

    def test_no_response_template_answers_ok_true(self, client):
        r = client.post("/api/v0/launch/query/?token=qtok", content=b"x")
        assert r.status_code == 202
        assert r.json() == {"ok": True}

    def test_the_path_without_trailing_slash_launches_too(self, client, log):
        r = client.post("/api/v0/launch/query?token=qtok", content=b"x")
        assert r.status_code == 202
        assert len(launched(log)) == 1

    def test_secrets_that_authenticated_the_request_are_redacted_in_the_event(self, client, log):
        client.post(
            "/api/v0/launch/token/",
            content=b"x",
            headers={"X-Token": "tok", "Authorization": "Bearer b"},
        )
        client.post("/api/v0/launch/query/?token=qtok&other=1", content=b"x")
        header_event, query_event = launched(log)
        assert header_event.request.headers["x-token"] == "[redacted]"
        assert header_event.request.headers["authorization"] == "[redacted]"
        assert query_event.request.query == {"token": "[redacted]", "other": "1"}
        dumped = orjson.dumps(header_event.model_dump(mode="json")).replace(b"x-token", b"")
        assert b'"tok"' not in dumped, dumped

    def test_standard_webhooks_signature_is_accepted(self, client, log):
        wh = Webhook(WHSEC)
        now = time.time()
        from datetime import UTC, datetime

        sig = wh.sign("msg_1", datetime.fromtimestamp(now, UTC), BODY.decode())
        r = client.post(
            "/api/v0/launch/sw/",
            content=BODY,
            headers={
                "webhook-id": "msg_1",
                "webhook-timestamp": str(int(now)),
                "webhook-signature": sig,
            },
        )
        assert r.status_code == 202
        assert launched(log)[0].delivery_id == "msg_1"
        stored = launched(log)[0].request.headers
        assert stored["webhook-signature"] == "[redacted]"
        assert stored["webhook-id"] == "msg_1"

    def test_a_signature_header_is_stored_redacted(self, client, log):
        r = client.post(
            "/api/v0/launch/gh/", content=BODY, headers={"X-Hub-Signature-256": github_sig(BODY)}
        )
        assert r.status_code == 202
        [event] = launched(log)
        assert event.request.headers["x-hub-signature-256"] == "[redacted]"
        assert github_sig(BODY) not in event.model_dump_json()

    def test_hmac_sha512_base64_and_sha1_hex_are_accepted(self, client):
        sig512 = base64.b64encode(hmac.new(b"s", BODY, hashlib.sha512).digest()).decode()
        assert (
            client.post("/api/v0/launch/b64/", content=BODY, headers={"X-Sig": sig512}).status_code
            == 202
        )
        sig1 = "sha1=" + hmac.new(b"s1", BODY, hashlib.sha1).hexdigest()
        assert (
            client.post(
                "/api/v0/launch/sha1/", content=BODY, headers={"X-Hub-Signature": sig1}
            ).status_code
            == 202
        )


class TestRejectedLaunch:
    @pytest.mark.parametrize(
        ("path", "headers", "body", "reason"),
        [
            ("gh", {"X-Hub-Signature-256": github_sig(BODY, "wrong")}, BODY, "mismatch"),
            ("gh", {"X-Hub-Signature-256": github_sig(BODY)}, BODY + b" ", "mismatch"),
            ("gh", {}, BODY, "X-Hub-Signature-256"),
            ("token", {"X-Token": "nope"}, b"x", "static_secret"),
            ("token", {}, b"x", "X-Token"),
            ("query?token=nope", {}, b"x", "static_secret"),
            ("b64", {"X-Sig": "AAAA"}, BODY, "mismatch"),
            ("nope", {}, b"x", "unknown trigger"),
            ("disabled-one", {}, b"x", "disabled"),
        ],
        ids=[
            "wrong-secret",
            "tampered-body",
            "missing-header",
            "wrong-static-secret",
            "missing-static-header",
            "wrong-query-token",
            "bad-base64-hmac",
            "unknown",
            "disabled",
        ],
    )
    def test_every_refusal_is_the_same_400_and_the_log_says_why(
        self, client, log, path, headers, body, reason
    ):
        r = client.post(f"/api/v0/launch/{path}", content=body, headers=headers)
        assert r.status_code == 400
        assert r.content == b'{"error":"launch rejected"}'
        assert launched(log) == []
        [entry] = rejections(log)
        assert entry.outcome == "rejected"
        assert reason.lower() in entry.reason.lower()

    def test_expired_standard_webhooks_timestamp_is_refused(self, client, log):
        from datetime import UTC, datetime

        then = time.time() - 3600
        sig = Webhook(WHSEC).sign("msg_2", datetime.fromtimestamp(then, UTC), BODY.decode())
        r = client.post(
            "/api/v0/launch/sw/",
            content=BODY,
            headers={
                "webhook-id": "msg_2",
                "webhook-timestamp": str(int(then)),
                "webhook-signature": sig,
            },
        )
        assert r.status_code == 400
        assert "tolerance" in rejections(log)[0].reason

    @pytest.mark.parametrize(
        "timestamp", ["9" * 5000, "1" + "0" * 400], ids=["5000-digits", "over-float-range"]
    )
    def test_a_timestamp_of_hundreds_of_digits_is_a_failed_condition_not_a_500(
        self, client, log, timestamp
    ):
        # correctly signed, so only the number itself is at fault
        signed = f"msg_3.{timestamp}.".encode() + BODY
        key = base64.b64decode(WHSEC.removeprefix("whsec_"))
        sig = base64.b64encode(hmac.digest(key, signed, "sha256")).decode()
        r = client.post(
            "/api/v0/launch/sw/",
            content=BODY,
            headers={
                "webhook-id": "msg_3",
                "webhook-timestamp": timestamp,
                "webhook-signature": f"v1,{sig}",
            },
        )
        assert (r.status_code, r.content) == (400, b'{"error":"launch rejected"}')
        assert launched(log) == []
        [entry] = rejections(log)
        assert entry.reason == "conditions[0] (standard_webhooks): invalid timestamp"

    def test_a_content_length_of_thousands_of_digits_is_over_the_limit(self, client, log):
        r = client.post(
            "/api/v0/launch/query/?token=qtok",
            content=b"x",
            headers={"content-length": "9" * 5000},
        )
        assert r.status_code == 413
        assert launched(log) == []

    def test_a_declared_oversized_body_gets_413_and_is_logged(self, client, log):
        r = client.post("/api/v0/launch/query/?token=qtok", content=b"x" * 1025)
        assert r.status_code == 413
        assert launched(log) == []
        assert rejections(log)[0].status_code == 413

    def test_a_chunked_oversized_body_gets_413(self, client, log):
        def chunks():
            for _ in range(10):
                yield b"y" * 200

        r = client.post("/api/v0/launch/query/?token=qtok", content=chunks())
        assert r.status_code == 413
        assert launched(log) == []

    def test_kafka_down_answers_503_with_retry_after_and_hands_out_no_run_id(self, client, log):
        log.down = True
        r = client.post("/api/v0/launch/query/?token=qtok", content=b"x")
        assert r.status_code == 503
        assert r.headers["retry-after"] == "5"
        assert "run" not in r.text.lower().replace("unavailable, retry", "")


class TestRedelivery:
    def test_same_github_delivery_id_returns_the_original_run_and_appends_nothing(
        self, client, log
    ):
        headers = {"X-Hub-Signature-256": github_sig(BODY), "X-GitHub-Delivery": "d-1"}
        first = client.post("/api/v0/launch/gh/", content=BODY, headers=headers)
        again = client.post("/api/v0/launch/gh/", content=BODY, headers=headers)
        assert first.status_code == again.status_code == 202
        assert first.text == again.text
        assert len(launched(log)) == 1
        assert [e.outcome for e in rejections(log)] == ["duplicate"]

    def test_a_different_delivery_id_starts_a_new_run(self, client, log):
        for delivery in ("d-1", "d-2"):
            client.post(
                "/api/v0/launch/gh/",
                content=BODY,
                headers={"X-Hub-Signature-256": github_sig(BODY), "X-GitHub-Delivery": delivery},
            )
        assert len({e.run_id for e in launched(log)}) == 2
