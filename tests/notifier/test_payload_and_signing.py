"""RunNotification bodies against the JSON Schema, and signatures checked by standardwebhooks."""

import base64
import hashlib
import hmac
import json
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import jsonschema
import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from hookrun.config.model.base import signing_keys
from hookrun.events.notification_schema import RUN_NOTIFICATION_SCHEMA
from hookrun.notifier.payload import build_notification, notification_body
from hookrun.notifier.signing import message_id, signed_headers
from tests.notifier.conftest import WHSEC_A, WHSEC_B, make_run_finished, make_whsk, verify_v1a

SCHEMAS = Path(__file__).parents[2] / "libs/events/schemas/run-notification"


def validate(body: dict) -> None:
    jsonschema.validate(body, RUN_NOTIFICATION_SCHEMA, format_checker=jsonschema.FormatChecker())


class TestPayload:
    def test_a_successful_run_has_every_trigger_dev_field_with_the_right_types(self, config):
        body = build_notification(make_run_finished(ok=True), config)
        validate(body)
        assert body["id"] == "run-1" and body["ok"] is True and body["status"] == "SUCCESS"
        assert body["output"] == {"ex-1": {"records": 8}}
        assert "error" not in body and "task" not in body
        assert body["startedAt"] == "2026-11-23T18:00:00.000Z"
        assert body["updatedAt"] == body["completedAt"] == "2026-11-23T18:00:02.000Z"
        assert body["isTest"] is False
        assert body["executionDurationInMs"] == 2000 and body["executionCount"] == 1
        assert body["invocation"] == {
            "id": "run-1",
            "payload": {"batch_size": 8},
            "timestamp": "2026-11-23T18:00:00.000Z",
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
        assert body["error"] == {"message": "execution ex-1 failed", "name": "FAILURE"}
        assert body["task"] == {
            "id": "ex-1",
            "cacheKey": None,
            "status": "ERRORED",
            "name": "extract",
            "icon": None,
            "startedAt": "2026-11-23T18:00:00.000Z",
            "error": {"message": "exit code 3", "name": "ExitCode"},
            "params": {"batch_size": 8},
        }
        assert body["statuses"][0]["state"] == "failure"
        assert body["account"] == {"id": "user-7", "metadata": None}

    def test_a_jwt_senders_other_claims_are_the_accounts_metadata(self, config):
        claims = {"iss": "https://idp.example", "exp": 1796531040, "roles": ["ci"]}
        run = make_run_finished(account="alice", account_metadata=claims)
        body = build_notification(run, config)
        validate(body)
        assert body["account"] == {"id": "alice", "metadata": claims}

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
        assert json.loads((SCHEMAS / "v2.json").read_text()) == RUN_NOTIFICATION_SCHEMA
        # the version receivers validated against before stays published
        assert json.loads((SCHEMAS / "v1.json").read_text())["$id"].endswith(":v1")

    def test_dates_are_utc_with_milliseconds_whatever_the_offset(self, config):
        t0 = datetime(2026, 12, 5, 23, 21, 35, 24_999, tzinfo=timezone(timedelta(hours=2)))
        body = build_notification(make_run_finished(started_at=t0), config)
        validate(body)
        assert body["startedAt"] == "2026-12-05T21:21:35.024Z"

    def test_a_stack_is_sent_as_stack_and_a_missing_name_is_left_out(self, config):
        run = make_run_finished(
            ok=False,
            error={"message": "boom", "stack_trace": "Traceback ..."},
            executions=[],
            execution_count=0,
        )
        body = build_notification(run, config)
        validate(body)
        assert body["error"] == {"message": "boom", "stack": "Traceback ..."}

    @pytest.mark.parametrize(
        ("status", "task_status"),
        [("FAILURE", "ERRORED"), ("TIMED_OUT", "ERRORED"), ("CANCELED", "CANCELED")],
    )
    def test_the_task_status_is_in_trigger_devs_task_vocabulary(self, config, status, task_status):
        execution = make_run_finished(ok=False).executions[0].model_dump()
        run = make_run_finished(
            ok=False, status=status, executions=[{**execution, "status": status}]
        )
        body = build_notification(run, config)
        validate(body)
        assert body["task"]["status"] == task_status

    def test_a_successful_run_without_output_leaves_output_out(self, config):
        body = build_notification(make_run_finished(ok=True, output=None), config)
        validate(body)
        assert "output" not in body

    def test_nulls_in_an_error_are_refused_by_the_schema(self, config):
        body = build_notification(make_run_finished(ok=False), config)
        body["error"]["stackTrace"] = None
        body["error"]["name"] = None
        with pytest.raises(jsonschema.ValidationError):
            validate(body)

    def test_a_body_as_trigger_dev_sends_it_validates(self):
        # Every optional field of Trigger.dev's FailedRunNotification (packages/core/src/schemas/
        # runs.ts): account with metadata, task with icon, error with stack, status records
        # with only their required keys, dates as Date.toJSON writes them.
        body = {
            "id": "run_clq2x8s0e0001",
            "ok": False,
            "status": "FAILURE",
            "statuses": [
                {"key": "progress", "label": "Progress", "history": [{"label": "Started"}]},
                {
                    "key": "upload",
                    "label": "Upload",
                    "state": "failure",
                    "data": {"percent": 40},
                    "history": [{"state": "loading"}, {"state": "failure", "data": {}}],
                },
            ],
            "startedAt": "2026-12-05T21:21:30.001Z",
            "updatedAt": "2026-12-05T21:21:35.024Z",
            "completedAt": "2026-12-05T21:21:35.024Z",
            "isTest": True,
            "executionDurationInMs": 5023,
            "executionCount": 2,
            "job": {"id": "github-stars", "version": "0.0.3"},
            "environment": {"slug": "prod", "id": "env_1", "type": "PRODUCTION"},
            "organization": {"slug": "acme", "id": "org_1", "title": "Acme"},
            "project": {"slug": "site", "id": "proj_1", "name": "Site"},
            "account": {"id": "acct_1", "metadata": {"plan": "pro"}},
            "invocation": {
                "id": "evt_1",
                "context": {"source": "github"},
                "timestamp": "2026-12-05T21:21:29.998Z",
                "payload": {"action": "created"},
            },
            "error": {"message": "Request failed", "name": "Error", "stack": "Error: ..."},
            "task": {
                "id": "task_1",
                "cacheKey": "send-email",
                "status": "ERRORED",
                "name": "Send email",
                "icon": "resend",
                "startedAt": "2026-12-05T21:21:31.500Z",
                "error": {"message": "Request failed", "stack": "Error: ..."},
                "params": None,
            },
        }
        validate(body)
        success = {k: v for k, v in body.items() if k not in ("error", "task")}
        validate({**success, "ok": True, "status": "SUCCESS", "output": {"sent": 3}})

    def test_the_body_bytes_are_the_same_on_every_attempt(self, config):
        run = make_run_finished()
        assert notification_body(run, config) == notification_body(run, config)


class TestSigning:
    def test_the_official_library_verifies_the_signature(self, config):
        body = notification_body(make_run_finished(), config)
        msg = message_id("run-1", "t1:abc")
        headers = signed_headers(msg, int(time.time()), body, signing_keys([WHSEC_A]))
        assert Webhook(WHSEC_A).verify(body, headers) == orjson.loads(body)
        assert headers["webhook-id"] == msg

    def test_a_wrong_secret_or_a_changed_body_does_not_verify(self, config):
        body = notification_body(make_run_finished(), config)
        headers = signed_headers("msg_1", int(time.time()), body, signing_keys([WHSEC_A]))
        with pytest.raises(WebhookVerificationError):
            Webhook(WHSEC_B).verify(body, headers)
        with pytest.raises(WebhookVerificationError):
            Webhook(WHSEC_A).verify(body + b" ", headers)

    def test_during_a_rotation_both_secrets_sign_and_each_verifies(self, config):
        body = notification_body(make_run_finished(), config)
        keys = signing_keys([WHSEC_B, WHSEC_A])
        headers = signed_headers("msg_1", int(time.time()), body, keys)
        signatures = headers["webhook-signature"].split(" ")
        assert len(signatures) == 2 and all(s.startswith("v1,") for s in signatures)
        Webhook(WHSEC_A).verify(body, headers)
        Webhook(WHSEC_B).verify(body, headers)
        # each signature alone verifies with its own secret
        Webhook(WHSEC_B).verify(body, {**headers, "webhook-signature": signatures[0]})
        Webhook(WHSEC_A).verify(body, {**headers, "webhook-signature": signatures[1]})

    def test_x_trigger_signature_is_the_hex_hmac_of_the_body(self):
        body = b'{"id":"run-1"}'
        headers = signed_headers("msg_1", 1, body, signing_keys([WHSEC_A]))
        expected = hmac.new(WHSEC_A.encode(), body, hashlib.sha256).hexdigest()
        assert headers["x-trigger-signature-256"] == expected

    def test_the_message_id_is_stable_per_run_and_subscription(self):
        assert message_id("run-1", "t1:a") == message_id("run-1", "t1:a")
        assert message_id("run-1", "t1:a") != message_id("run-1", "t1:b")
        assert message_id("run-1", "t1:a").startswith("msg_run-1_")


class TestAsymmetricSigning:
    """Standard Webhooks' ``v1a``: ed25519 over ``id.timestamp.body`` with a ``whsk_`` key."""

    def test_a_whsk_key_signs_v1a_and_its_whpk_key_verifies_it(self, config):
        whsk, whpk = make_whsk()
        body = notification_body(make_run_finished(), config)
        headers = signed_headers("msg_1", int(time.time()), body, signing_keys([whsk]))
        [sig] = headers["webhook-signature"].split(" ")
        assert sig.startswith("v1a,")
        assert verify_v1a(whpk, body, headers)
        # Trigger.dev's header is an HMAC: without a whsec_ secret it is not sent
        assert "x-trigger-signature-256" not in headers

    def test_another_key_or_a_changed_body_does_not_verify(self, config):
        whsk, _ = make_whsk()
        _, other = make_whsk()
        body = notification_body(make_run_finished(), config)
        headers = signed_headers("msg_1", int(time.time()), body, signing_keys([whsk]))
        assert not verify_v1a(other, body, headers)
        assert not verify_v1a(make_whsk()[1], body + b" ", headers)

    def test_v1_and_v1a_sign_side_by_side_and_each_receiver_verifies(self, config):
        whsk, whpk = make_whsk()
        body = notification_body(make_run_finished(), config)
        headers = signed_headers("msg_1", int(time.time()), body, signing_keys([WHSEC_A, whsk]))
        assert [s.split(",")[0] for s in headers["webhook-signature"].split(" ")] == ["v1", "v1a"]
        Webhook(WHSEC_A).verify(body, headers)
        assert verify_v1a(whpk, body, headers)

    def test_a_64_byte_libsodium_style_key_signs_as_its_seed(self, config):
        key = Ed25519PrivateKey.generate()
        seed, public = key.private_bytes_raw(), key.public_key().public_bytes_raw()
        whsk = "whsk_" + base64.b64encode(seed + public).decode()
        whpk = "whpk_" + base64.b64encode(public).decode()
        body = b'{"id":"run-1"}'
        assert verify_v1a(
            whpk, body, signed_headers("m", int(time.time()), body, signing_keys([whsk]))
        )

    def test_a_whsk_key_whose_halves_differ_is_refused(self):
        seed = Ed25519PrivateKey.generate().private_bytes_raw()
        other = Ed25519PrivateKey.generate().public_key().public_bytes_raw()
        with pytest.raises(ValueError, match="public half"):
            signing_keys(["whsk_" + base64.b64encode(seed + other).decode()])
