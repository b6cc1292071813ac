"""Checking conditions against inbound requests, delivery ids and redaction sets."""

import base64
import hashlib
import hmac
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from standardwebhooks import Webhook

from hookrun.config import (
    HmacCondition,
    InboundRequest,
    SlackCondition,
    StandardWebhooksCondition,
    StripeCondition,
    Trigger,
    Verdict,
    check_conditions,
    delivery_id,
    redacted_headers,
    redacted_query,
)

NOW = 1_700_000_000.0
BODY = orjson.dumps({"batch_size": 16, "records": [1, 2, 3]})
WHSEC = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789ab").decode()


@pytest.fixture
def trigger_with(
    data: dict[str, Any], parse: Callable[[dict[str, Any]], Any]
) -> Callable[..., Trigger]:
    """Load the base config with the first trigger's conditions (and fields) replaced."""

    def _trigger(conditions: list[dict[str, Any]], **fields: Any) -> Trigger:
        data["triggers"][0]["conditions"] = conditions
        data["triggers"][0].update(fields)
        trigger: Trigger = parse(data).triggers[0]
        return trigger

    return _trigger


def request(
    headers: dict[str, str] | None = None,
    body: bytes = BODY,
    query: dict[str, str] | None = None,
    remote_addr: str | None = "203.0.113.7",
) -> InboundRequest:
    return InboundRequest(
        method="POST",
        path="/api/v0/launch/feature-extraction/",
        headers=headers or {},
        query=query or {},
        body=body,
        remote_addr=remote_addr,
    )


def github_signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def standard_webhooks_headers(secret: str | bytes, body: bytes, at: float, msg_id: str) -> dict:
    signature = Webhook(secret).sign(msg_id, datetime.fromtimestamp(at, tz=UTC), body.decode())
    return {"webhook-id": msg_id, "webhook-timestamp": str(int(at)), "webhook-signature": signature}


def stripe_header(secret: str, body: bytes, at: float) -> str:
    signed = f"{int(at)}.".encode() + body
    return f"t={int(at)},v1={hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()}"


def slack_headers(secret: str, body: bytes, at: float) -> dict[str, str]:
    signed = f"v0:{int(at)}:".encode() + body
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": str(int(at)), "X-Slack-Signature": f"v0={digest}"}


class TestHmac:
    CONDITION = {
        "type": "hmac",
        "header": "X-Hub-Signature-256",
        "secret": "s3cret",
        "prefix": "sha256=",
    }

    def test_valid_signature_passes(self, trigger_with: Callable[..., Trigger]) -> None:
        trigger = trigger_with([self.CONDITION])
        headers = {"x-hub-signature-256": github_signature("s3cret", BODY)}
        verdict = check_conditions(trigger, request(headers), NOW)
        assert verdict.ok, verdict.reason

    def test_uppercase_hex_is_accepted(self, trigger_with: Callable[..., Trigger]) -> None:
        trigger = trigger_with([self.CONDITION])
        signature = github_signature("s3cret", BODY)
        headers = {"X-Hub-Signature-256": "sha256=" + signature[7:].upper()}
        assert check_conditions(trigger, request(headers), NOW).ok

    def test_wrong_secret_is_a_signature_mismatch(
        self, trigger_with: Callable[..., Trigger]
    ) -> None:
        trigger = trigger_with([self.CONDITION])
        headers = {"X-Hub-Signature-256": github_signature("other", BODY)}
        verdict = check_conditions(trigger, request(headers), NOW)
        assert not verdict.ok
        assert verdict.reason == "conditions[0] (hmac): signature mismatch"

    def test_tampered_body_is_a_signature_mismatch(
        self, trigger_with: Callable[..., Trigger]
    ) -> None:
        trigger = trigger_with([self.CONDITION])
        headers = {"X-Hub-Signature-256": github_signature("s3cret", BODY)}
        verdict = check_conditions(trigger, request(headers, body=BODY + b" "), NOW)
        assert verdict.reason == "conditions[0] (hmac): signature mismatch"

    def test_missing_header_is_named(self, trigger_with: Callable[..., Trigger]) -> None:
        verdict = check_conditions(trigger_with([self.CONDITION]), request({}), NOW)
        assert verdict.reason == "conditions[0] (hmac): missing header X-Hub-Signature-256"

    def test_missing_prefix_fails(self, trigger_with: Callable[..., Trigger]) -> None:
        trigger = trigger_with([self.CONDITION])
        headers = {"X-Hub-Signature-256": github_signature("s3cret", BODY)[7:]}
        verdict = check_conditions(trigger, request(headers), NOW)
        assert verdict.reason == "conditions[0] (hmac): signature does not start with 'sha256='"

    @pytest.mark.parametrize("algorithm", ["sha1", "sha256", "sha512"])
    def test_base64_encoding_works_for_every_algorithm(
        self, trigger_with: Callable[..., Trigger], algorithm: str
    ) -> None:
        condition = {"type": "hmac", "header": "X-Sig", "secret": "k", "algorithm": algorithm}
        trigger = trigger_with([condition | {"encoding": "base64"}])
        digest = hmac.new(b"k", BODY, algorithm).digest()
        headers = {"X-Sig": base64.b64encode(digest).decode()}
        assert check_conditions(trigger, request(headers), NOW).ok
        headers = {"X-Sig": base64.b64encode(digest[::-1]).decode()}
        assert not check_conditions(trigger, request(headers), NOW).ok


class TestStaticSecret:
    def test_header_secret_passes_and_wrong_one_fails(
        self, trigger_with: Callable[..., Trigger]
    ) -> None:
        trigger = trigger_with([{"type": "static_secret", "header": "X-Token", "secret": "tok"}])
        assert check_conditions(trigger, request({"x-token": "tok"}), NOW).ok
        verdict = check_conditions(trigger, request({"X-Token": "tok2"}), NOW)
        assert verdict.reason == "conditions[0] (static_secret): secret mismatch"

    def test_query_secret_passes_and_missing_one_is_named(
        self, trigger_with: Callable[..., Trigger]
    ) -> None:
        trigger = trigger_with([{"type": "static_secret", "query": "token", "secret": "tok"}])
        assert check_conditions(trigger, request(query={"token": "tok"}), NOW).ok
        verdict = check_conditions(trigger, request(query={}), NOW)
        assert verdict.reason == "conditions[0] (static_secret): missing query parameter token"

    def test_static_secret_headers_and_query_are_redacted(
        self, trigger_with: Callable[..., Trigger]
    ) -> None:
        trigger = trigger_with(
            [
                {"type": "static_secret", "header": "X-Token", "secret": "a"},
                {"type": "static_secret", "query": "token", "secret": "b"},
            ]
        )
        assert redacted_headers(trigger) == {
            "x-token",
            "authorization",
            "cookie",
            "proxy-authorization",
        }
        assert redacted_query(trigger) == {"token"}

    def test_every_header_a_condition_reads_a_signature_from_is_redacted(
        self, trigger_with: Callable[..., Trigger]
    ) -> None:
        trigger = trigger_with(
            [
                {"type": "hmac", "header": "X-Hub-Signature-256", "secret": "a"},
                {"type": "standard_webhooks", "secret": "b"},
                {"type": "stripe", "secret": "c"},
                {"type": "slack", "secret": "d"},
                {"type": "ip_allow", "cidrs": ["10.0.0.0/8"]},
            ]
        )
        assert redacted_headers(trigger) == {
            "x-hub-signature-256",
            "webhook-signature",
            "svix-signature",
            "stripe-signature",
            "x-slack-signature",
            "authorization",
            "cookie",
            "proxy-authorization",
        }


class TestStandardWebhooks:
    def test_signature_from_the_reference_library_passes(
        self, trigger_with: Callable[..., Trigger]
    ) -> None:
        trigger = trigger_with([{"type": "standard_webhooks", "secret": WHSEC}])
        headers = standard_webhooks_headers(WHSEC, BODY, NOW - 10, "msg_1")
        assert check_conditions(trigger, request(headers), NOW).ok

    def test_any_of_several_signatures_may_match(
        self, trigger_with: Callable[..., Trigger]
    ) -> None:
        trigger = trigger_with([{"type": "standard_webhooks", "secret": WHSEC}])
        headers = standard_webhooks_headers(WHSEC, BODY, NOW, "msg_1")
        other = standard_webhooks_headers("whsec_b3RoZXItc2VjcmV0", BODY, NOW, "msg_1")
        headers["webhook-signature"] = (
            f"v1a,xyz {other['webhook-signature']} " + (headers["webhook-signature"])
        )
        assert check_conditions(trigger, request(headers), NOW).ok

    def test_svix_header_names_are_accepted(self, trigger_with: Callable[..., Trigger]) -> None:
        trigger = trigger_with([{"type": "standard_webhooks", "secret": WHSEC}])
        headers = standard_webhooks_headers(WHSEC, BODY, NOW, "msg_2")
        svix = {name.replace("webhook-", "svix-"): value for name, value in headers.items()}
        assert check_conditions(trigger, request(svix), NOW).ok

    def test_raw_secret_without_prefix_is_used_as_bytes(
        self, trigger_with: Callable[..., Trigger]
    ) -> None:
        trigger = trigger_with([{"type": "standard_webhooks", "secret": "plain-secret"}])
        headers = standard_webhooks_headers(b"plain-secret", BODY, NOW, "msg_3")
        assert check_conditions(trigger, request(headers), NOW).ok

    def test_wrong_secret_fails(self, trigger_with: Callable[..., Trigger]) -> None:
        trigger = trigger_with([{"type": "standard_webhooks", "secret": WHSEC}])
        headers = standard_webhooks_headers("whsec_b3RoZXItc2VjcmV0", BODY, NOW, "msg_1")
        verdict = check_conditions(trigger, request(headers), NOW)
        assert verdict.reason == "conditions[0] (standard_webhooks): signature mismatch"

    def test_tampered_body_fails(self, trigger_with: Callable[..., Trigger]) -> None:
        trigger = trigger_with([{"type": "standard_webhooks", "secret": WHSEC}])
        headers = standard_webhooks_headers(WHSEC, BODY, NOW, "msg_1")
        verdict = check_conditions(trigger, request(headers, body=b"{}"), NOW)
        assert verdict.reason == "conditions[0] (standard_webhooks): signature mismatch"

    def test_missing_header_is_named(self, trigger_with: Callable[..., Trigger]) -> None:
        trigger = trigger_with([{"type": "standard_webhooks", "secret": WHSEC}])
        headers = standard_webhooks_headers(WHSEC, BODY, NOW, "msg_1")
        del headers["webhook-signature"]
        verdict = check_conditions(trigger, request(headers), NOW)
        assert (
            verdict.reason == "conditions[0] (standard_webhooks): missing header webhook-signature"
        )

    def test_expired_timestamp_fails_with_the_skew(
        self, trigger_with: Callable[..., Trigger]
    ) -> None:
        trigger = trigger_with([{"type": "standard_webhooks", "secret": WHSEC}])
        headers = standard_webhooks_headers(WHSEC, BODY, NOW - 412, "msg_1")
        verdict = check_conditions(trigger, request(headers), NOW)
        assert verdict.reason == (
            "conditions[0] (standard_webhooks): timestamp outside tolerance (412s > 300s)"
        )

    def test_timestamp_from_the_future_fails_too(
        self, trigger_with: Callable[..., Trigger]
    ) -> None:
        trigger = trigger_with([{"type": "standard_webhooks", "secret": WHSEC, "tolerance_s": 60}])
        headers = standard_webhooks_headers(WHSEC, BODY, NOW + 61, "msg_1")
        assert "(61s > 60s)" in check_conditions(trigger, request(headers), NOW).reason


class TestStripe:
    CONDITION = {"type": "stripe", "secret": "whsec_stripe_test"}

    def test_valid_signature_passes(self, trigger_with: Callable[..., Trigger]) -> None:
        trigger = trigger_with([self.CONDITION])
        header = stripe_header("whsec_stripe_test", BODY, NOW - 5)
        assert check_conditions(trigger, request({"Stripe-Signature": header}), NOW).ok

    def test_second_v1_signature_may_match(self, trigger_with: Callable[..., Trigger]) -> None:
        trigger = trigger_with([self.CONDITION])
        t, v1 = stripe_header("whsec_stripe_test", BODY, NOW).split(",")
        header = f"{t},v1={'0' * 64},{v1},v0=abc"
        assert check_conditions(trigger, request({"Stripe-Signature": header}), NOW).ok

    def test_wrong_secret_and_tampered_body_fail(
        self, trigger_with: Callable[..., Trigger]
    ) -> None:
        trigger = trigger_with([self.CONDITION])
        wrong = {"Stripe-Signature": stripe_header("other", BODY, NOW)}
        assert check_conditions(trigger, request(wrong), NOW).reason == (
            "conditions[0] (stripe): signature mismatch"
        )
        right = {"Stripe-Signature": stripe_header("whsec_stripe_test", BODY, NOW)}
        assert not check_conditions(trigger, request(right, body=b"{}"), NOW).ok

    def test_missing_header_and_expired_timestamp_fail(
        self, trigger_with: Callable[..., Trigger]
    ) -> None:
        trigger = trigger_with([self.CONDITION])
        assert check_conditions(trigger, request({}), NOW).reason == (
            "conditions[0] (stripe): missing header Stripe-Signature"
        )
        old = {"Stripe-Signature": stripe_header("whsec_stripe_test", BODY, NOW - 301)}
        assert check_conditions(trigger, request(old), NOW).reason == (
            "conditions[0] (stripe): timestamp outside tolerance (301s > 300s)"
        )


class TestSlack:
    CONDITION = {"type": "slack", "secret": "slack-signing-secret"}

    def test_valid_signature_passes(self, trigger_with: Callable[..., Trigger]) -> None:
        trigger = trigger_with([self.CONDITION])
        headers = slack_headers("slack-signing-secret", BODY, NOW)
        assert check_conditions(trigger, request(headers), NOW).ok

    def test_wrong_secret_and_tampered_body_fail(
        self, trigger_with: Callable[..., Trigger]
    ) -> None:
        trigger = trigger_with([self.CONDITION])
        wrong = slack_headers("other", BODY, NOW)
        assert check_conditions(trigger, request(wrong), NOW).reason == (
            "conditions[0] (slack): signature mismatch"
        )
        right = slack_headers("slack-signing-secret", BODY, NOW)
        assert not check_conditions(trigger, request(right, body=BODY[:-1]), NOW).ok

    def test_missing_header_and_expired_timestamp_fail(
        self, trigger_with: Callable[..., Trigger]
    ) -> None:
        trigger = trigger_with([self.CONDITION])
        headers = slack_headers("slack-signing-secret", BODY, NOW - 900)
        assert check_conditions(trigger, request(headers), NOW).reason == (
            "conditions[0] (slack): timestamp outside tolerance (900s > 300s)"
        )
        del headers["X-Slack-Signature"]
        assert check_conditions(trigger, request(headers), NOW).reason == (
            "conditions[0] (slack): missing header X-Slack-Signature"
        )


class TestNumbersInHeaders:
    """A timestamp no sender makes is a failed condition, whatever int() or float() make of it."""

    @pytest.fixture(
        params=[
            pytest.param("9" * 5000, id="over-int-digit-limit"),
            pytest.param("1" + "0" * 400, id="over-float-range"),
        ]
    )
    def timestamp(self, request: pytest.FixtureRequest) -> str:
        return str(request.param)

    def test_standard_webhooks(self, trigger_with: Callable[..., Trigger], timestamp: str) -> None:
        trigger = trigger_with([{"type": "standard_webhooks", "secret": WHSEC}])
        signed = f"msg_1.{timestamp}.".encode() + BODY
        key = base64.b64decode(WHSEC.removeprefix("whsec_"))
        signature = base64.b64encode(hmac.digest(key, signed, "sha256")).decode()
        headers = {
            "webhook-id": "msg_1",
            "webhook-timestamp": timestamp,
            "webhook-signature": f"v1,{signature}",
        }
        verdict = check_conditions(trigger, request(headers), NOW)
        assert verdict == Verdict(False, "conditions[0] (standard_webhooks): invalid timestamp")

    def test_stripe(self, trigger_with: Callable[..., Trigger], timestamp: str) -> None:
        trigger = trigger_with([{"type": "stripe", "secret": "sk"}])
        signature = hmac.new(b"sk", f"{timestamp}.".encode() + BODY, hashlib.sha256).hexdigest()
        headers = {"Stripe-Signature": f"t={timestamp},v1={signature}"}
        verdict = check_conditions(trigger, request(headers), NOW)
        assert verdict == Verdict(
            False, "conditions[0] (stripe): malformed Stripe-Signature header"
        )

    def test_slack(self, trigger_with: Callable[..., Trigger], timestamp: str) -> None:
        trigger = trigger_with([{"type": "slack", "secret": "ss"}])
        signed = f"v0:{timestamp}:".encode() + BODY
        headers = {
            "X-Slack-Request-Timestamp": timestamp,
            "X-Slack-Signature": "v0=" + hmac.new(b"ss", signed, hashlib.sha256).hexdigest(),
        }
        verdict = check_conditions(trigger, request(headers), NOW)
        assert verdict == Verdict(False, "conditions[0] (slack): invalid timestamp")

    def test_a_timestamp_with_surrounding_spaces_still_passes(
        self, trigger_with: Callable[..., Trigger]
    ) -> None:
        trigger = trigger_with([{"type": "slack", "secret": "ss"}])
        headers = slack_headers("ss", BODY, NOW)
        headers["X-Slack-Request-Timestamp"] = f" {headers['X-Slack-Request-Timestamp']} "
        assert check_conditions(trigger, request(headers), NOW).ok


class TestIpAllow:
    def test_only_listed_networks_pass(self, trigger_with: Callable[..., Trigger]) -> None:
        trigger = trigger_with([{"type": "ip_allow", "cidrs": ["10.0.0.0/8", "2001:db8::/32"]}])
        assert check_conditions(trigger, request(remote_addr="10.1.2.3"), NOW).ok
        assert check_conditions(trigger, request(remote_addr="2001:db8::1"), NOW).ok
        assert check_conditions(trigger, request(remote_addr="::ffff:10.9.9.9"), NOW).ok
        verdict = check_conditions(trigger, request(remote_addr="192.0.2.1"), NOW)
        assert verdict.reason == "conditions[0] (ip_allow): remote address 192.0.2.1 is not allowed"
        assert not check_conditions(trigger, request(remote_addr=None), NOW).ok


class TestAllConditions:
    def test_every_condition_must_pass_and_the_first_failure_is_reported(
        self, trigger_with: Callable[..., Trigger]
    ) -> None:
        trigger = trigger_with(
            [
                {"type": "ip_allow", "cidrs": ["203.0.113.0/24"]},
                {"type": "static_secret", "header": "X-Token", "secret": "tok"},
            ]
        )
        assert check_conditions(trigger, request({"X-Token": "tok"}), NOW).ok
        verdict = check_conditions(trigger, request({"X-Token": "bad"}), NOW)
        assert verdict.reason == "conditions[1] (static_secret): secret mismatch"

    def test_a_condition_with_an_account_identifies_the_sender(
        self, trigger_with: Callable[..., Trigger]
    ) -> None:
        trigger = trigger_with(
            [{"type": "static_secret", "header": "X-Token", "secret": "t", "account": "ci-bot"}]
        )
        verdict = check_conditions(trigger, request({"X-Token": "t"}), NOW)
        assert (verdict.ok, verdict.account) == (True, "ci-bot")
        assert check_conditions(trigger, request({"X-Token": "x"}), NOW).account is None


class TestPresets:
    def test_github_preset_is_the_hmac_condition_github_uses(
        self, trigger_with: Callable[..., Trigger]
    ) -> None:
        trigger = trigger_with([{"preset": "github", "secret": "gh"}])
        [condition] = trigger.conditions
        assert isinstance(condition, HmacCondition)
        assert (condition.header, condition.algorithm, condition.encoding, condition.prefix) == (
            "X-Hub-Signature-256",
            "sha256",
            "hex",
            "sha256=",
        )
        headers = {"X-Hub-Signature-256": github_signature("gh", BODY), "X-GitHub-Delivery": "d1"}
        assert check_conditions(trigger, request(headers), NOW).ok
        assert delivery_id(trigger, request(headers)) == "d1"

    def test_stripe_preset_dedupes_on_the_event_id(
        self, trigger_with: Callable[..., Trigger]
    ) -> None:
        trigger = trigger_with([{"preset": "stripe", "secret": "sk"}])
        assert isinstance(trigger.conditions[0], StripeCondition)
        body = orjson.dumps({"id": "evt_123", "type": "charge.succeeded"})
        headers = {"Stripe-Signature": stripe_header("sk", body, NOW)}
        assert check_conditions(trigger, request(headers, body=body), NOW).ok
        assert delivery_id(trigger, request(headers, body=body)) == "evt_123"

    def test_slack_preset_dedupes_on_event_id(self, trigger_with: Callable[..., Trigger]) -> None:
        trigger = trigger_with([{"preset": "slack", "secret": "ss", "tolerance_s": 60}])
        assert isinstance(trigger.conditions[0], SlackCondition)
        assert trigger.conditions[0].tolerance_s == 60
        body = orjson.dumps({"event_id": "Ev01", "type": "event_callback"})
        headers = slack_headers("ss", body, NOW)
        assert check_conditions(trigger, request(headers, body=body), NOW).ok
        assert delivery_id(trigger, request(headers, body=body)) == "Ev01"

    def test_standard_webhooks_preset_dedupes_on_webhook_id(
        self, trigger_with: Callable[..., Trigger]
    ) -> None:
        trigger = trigger_with([{"preset": "standard_webhooks", "secret": WHSEC}])
        assert isinstance(trigger.conditions[0], StandardWebhooksCondition)
        headers = standard_webhooks_headers(WHSEC, BODY, NOW, "msg_9")
        assert check_conditions(trigger, request(headers), NOW).ok
        assert delivery_id(trigger, request(headers)) == "msg_9"
        svix = {k.replace("webhook-", "svix-"): v for k, v in headers.items()}
        assert delivery_id(trigger, request(svix)) == "msg_9"


class TestDeliveryId:
    def test_without_dedupe_the_first_known_header_is_used(
        self, trigger_with: Callable[..., Trigger]
    ) -> None:
        trigger = trigger_with([])
        assert delivery_id(trigger, request({"Idempotency-Key": "k1", "svix-id": "s1"})) == "s1"
        assert delivery_id(trigger, request({"Idempotency-Key": "k1"})) == "k1"
        assert delivery_id(trigger, request({})) is None

    def test_explicit_dedupe_overrides_the_preset(
        self, trigger_with: Callable[..., Trigger]
    ) -> None:
        trigger = trigger_with(
            [{"preset": "github", "secret": "gh"}], dedupe={"payload": "delivery.ids[1]"}
        )
        body = orjson.dumps({"delivery": {"ids": ["a", 42]}})
        assert delivery_id(trigger, request({"X-GitHub-Delivery": "d1"}, body=body)) == "42"

    def test_payload_dedupe_on_a_non_json_body_gives_none(
        self, trigger_with: Callable[..., Trigger]
    ) -> None:
        trigger = trigger_with([], dedupe={"payload": "id"})
        assert delivery_id(trigger, request(body=b"not json")) is None
        assert delivery_id(trigger, request(body=b'{"other": 1}')) is None


class TestVerifiedDeliveryId:
    """A condition that verified a delivery id decides the dedupe key; unsigned headers cannot."""

    def test_standard_webhooks_dedupes_by_the_signed_webhook_id_not_an_unsigned_header(
        self, trigger_with: Callable[..., Trigger]
    ) -> None:
        trigger = trigger_with([{"type": "standard_webhooks", "secret": WHSEC}])
        headers = standard_webhooks_headers(WHSEC, BODY, NOW, "msg_signed")
        for extra in ({}, {"X-GitHub-Delivery": "forged"}, {"Idempotency-Key": "forged"}):
            replayed = request(headers | extra)
            assert check_conditions(trigger, replayed, NOW).ok
            assert delivery_id(trigger, replayed) == "msg_signed"

    def test_standard_webhooks_in_svix_headers_dedupes_by_the_signed_svix_id(
        self, trigger_with: Callable[..., Trigger]
    ) -> None:
        trigger = trigger_with([{"type": "standard_webhooks", "secret": WHSEC}])
        signed = standard_webhooks_headers(WHSEC, BODY, NOW, "msg_svix")
        svix = {k.replace("webhook-", "svix-"): v for k, v in signed.items()}
        replayed = request(svix | {"X-GitHub-Delivery": "forged"})
        assert check_conditions(trigger, replayed, NOW).ok
        assert delivery_id(trigger, replayed) == "msg_svix"

    def test_the_verified_id_wins_over_a_configured_unsigned_dedupe_header(
        self, trigger_with: Callable[..., Trigger]
    ) -> None:
        trigger = trigger_with(
            [{"type": "standard_webhooks", "secret": WHSEC}], dedupe={"header": "X-Request-Id"}
        )
        headers = standard_webhooks_headers(WHSEC, BODY, NOW, "msg_1") | {"X-Request-Id": "r"}
        assert delivery_id(trigger, request(headers)) == "msg_1"

    def test_stripe_dedupes_by_the_event_id_in_the_signed_payload(
        self, trigger_with: Callable[..., Trigger]
    ) -> None:
        trigger = trigger_with([{"type": "stripe", "secret": "sk"}])
        body = orjson.dumps({"id": "evt_9", "type": "charge.succeeded"})
        headers = {"Stripe-Signature": stripe_header("sk", body, NOW)}
        forged = headers | {"X-GitHub-Delivery": "forged", "Idempotency-Key": "forged"}
        assert check_conditions(trigger, request(forged, body=body), NOW).ok
        assert delivery_id(trigger, request(forged, body=body)) == "evt_9"

    def test_slack_dedupes_by_event_id_where_the_payload_has_one(
        self, trigger_with: Callable[..., Trigger]
    ) -> None:
        trigger = trigger_with([{"type": "slack", "secret": "ss"}])
        body = orjson.dumps({"event_id": "Ev42", "type": "event_callback"})
        headers = slack_headers("ss", body, NOW) | {"X-GitHub-Delivery": "forged"}
        assert delivery_id(trigger, request(headers, body=body)) == "Ev42"
        # A slash command (a form body) has no event id: the usual sources apply.
        form = b"command=%2Fdeploy&text=now"
        plain = slack_headers("ss", form, NOW) | {"Idempotency-Key": "k"}
        assert delivery_id(trigger, request(plain, body=form)) == "k"
