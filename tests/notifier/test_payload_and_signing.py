"""RunNotification bodies against the JSON Schema, and signatures checked by standardwebhooks."""

import base64
import hashlib
import hmac
import json
import time
from pathlib import Path

import jsonschema
import orjson
import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from hookrun.events.notification_schema import RUN_NOTIFICATION_SCHEMA
from hookrun.notifier.payload import build_notification, notification_body
from hookrun.notifier.signing import message_id, signed_headers
from tests.notifier.conftest import WHSEC_A, WHSEC_B, make_run_finished

SCHEMA_FILE = Path(__file__).parents[2] / "libs/events/schemas/run-notification.json"


def validate(body: dict) -> None:
    jsonschema.validate(body, RUN_NOTIFICATION_SCHEMA, format_checker=jsonschema.FormatChecker())


class TestPayload:
    def test_a_successful_run_has_every_trigger_dev_field_with_the_right_types(self, config):
        body = build_notification(make_run_finished(ok=True), config)
        validate(body)
        assert body["id"] == "run-1" and body["ok"] is True and body["status"] == "SUCCESS"
        assert body["output"] == {"ex-1": {"records": 8}}
        assert "error" not in body and "task" not in body
        assert body["startedAt"] == "2026-11-23T18:00:00Z"
        assert body["completedAt"] == "2026-11-23T18:00:02Z"
        assert body["isTest"] is False
        assert body["executionDurationInMs"] == 2000 and body["executionCount"] == 1
        assert body["invocation"] == {
            "id": "run-1",
            "payload": {"batch_size": 8},
            "timestamp": "2026-11-23T18:00:00Z",
            "context": {},
        }
        assert body["job"] == {"id": "t1", "version": "abc123def456"}
        assert body["environment"] == {"id": "e-1", "slug": "dev", "type": "DEVELOPMENT"}
        assert body["organization"] == {"id": "o-1", "slug": "acme", "title": "Acme"}
        assert body["project"] == {"id": "p-1", "slug": "demo", "name": "Demo"}
        [record] = body["statuses"]
        assert record["key"] == "ex-1" and record["label"] == "extract"
        assert record["state"] == "success"
        assert record["data"]["exitCode"] == 0 and record["data"]["durationInMs"] == 1000
        assert [h["state"] for h in record["history"]] == ["loading", "success"]

    def test_a_failed_run_has_error_and_task_but_no_output(self, config):
        body = build_notification(make_run_finished(ok=False, account="user-7"), config)
        validate(body)
        assert body["ok"] is False and "output" not in body
        assert body["error"]["message"] == "execution ex-1 failed"
        assert body["task"] == {
            "id": "ex-1",
            "cacheKey": None,
            "error": {"message": "exit code 3", "name": "ExitCode", "stackTrace": None},
            "status": "FAILURE",
            "name": "extract",
            "startedAt": "2026-11-23T18:00:00Z",
            "params": {"batch_size": 8},
        }
        assert body["statuses"][0]["state"] == "failure"
        assert body["account"] == {"id": "user-7", "metadata": None}

    def test_a_run_that_failed_before_any_execution_still_validates(self, config):
        run = make_run_finished(
            ok=False, status="INVALID_PAYLOAD", executions=[], execution_count=0
        )
        body = build_notification(run, config)
        validate(body)
        assert "task" not in body and body["status"] == "INVALID_PAYLOAD"

    def test_the_schema_rejects_a_body_missing_a_field(self, config):
        body = build_notification(make_run_finished(), config)
        del body["job"]
        with pytest.raises(jsonschema.ValidationError):
            validate(body)

    def test_the_committed_schema_file_is_the_generated_one(self):
        assert json.loads(SCHEMA_FILE.read_text()) == RUN_NOTIFICATION_SCHEMA

    def test_the_body_bytes_are_the_same_on_every_attempt(self, config):
        run = make_run_finished()
        assert notification_body(run, config) == notification_body(run, config)


class TestSigning:
    def test_the_official_library_verifies_the_signature(self, config):
        body = notification_body(make_run_finished(), config)
        msg = message_id("run-1", "t1:abc")
        headers = signed_headers(msg, int(time.time()), body, [_key(WHSEC_A)], WHSEC_A)
        assert Webhook(WHSEC_A).verify(body, headers) == orjson.loads(body)
        assert headers["webhook-id"] == msg

    def test_a_wrong_secret_or_a_changed_body_does_not_verify(self, config):
        body = notification_body(make_run_finished(), config)
        headers = signed_headers("msg_1", int(time.time()), body, [_key(WHSEC_A)], WHSEC_A)
        with pytest.raises(WebhookVerificationError):
            Webhook(WHSEC_B).verify(body, headers)
        with pytest.raises(WebhookVerificationError):
            Webhook(WHSEC_A).verify(body + b" ", headers)

    def test_during_a_rotation_both_secrets_sign_and_each_verifies(self, config):
        body = notification_body(make_run_finished(), config)
        keys = [_key(WHSEC_B), _key(WHSEC_A)]
        headers = signed_headers("msg_1", int(time.time()), body, keys, WHSEC_B)
        signatures = headers["webhook-signature"].split(" ")
        assert len(signatures) == 2 and all(s.startswith("v1,") for s in signatures)
        Webhook(WHSEC_A).verify(body, headers)
        Webhook(WHSEC_B).verify(body, headers)
        # each signature alone verifies with its own secret
        Webhook(WHSEC_B).verify(body, {**headers, "webhook-signature": signatures[0]})
        Webhook(WHSEC_A).verify(body, {**headers, "webhook-signature": signatures[1]})

    def test_x_trigger_signature_is_the_hex_hmac_of_the_body(self):
        body = b'{"id":"run-1"}'
        headers = signed_headers("msg_1", 1, body, [_key(WHSEC_A)], WHSEC_A)
        expected = hmac.new(WHSEC_A.encode(), body, hashlib.sha256).hexdigest()
        assert headers["x-trigger-signature-256"] == expected

    def test_the_message_id_is_stable_per_run_and_subscription(self):
        assert message_id("run-1", "t1:a") == message_id("run-1", "t1:a")
        assert message_id("run-1", "t1:a") != message_id("run-1", "t1:b")
        assert message_id("run-1", "t1:a").startswith("msg_run-1_")


def _key(whsec: str) -> bytes:
    return base64.b64decode(whsec.removeprefix("whsec_"))
