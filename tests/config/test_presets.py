"""Provider presets, each checked with a request shaped as the provider's documentation shows.

Every provider documents its header names and signature format, which the requests below follow;
where the documentation publishes no complete example value, the signature is computed the way
that page says it is. Sources:

- gitlab: https://docs.gitlab.com/user/project/integrations/webhooks/ (X-Gitlab-Token holds the
  secret token as is; X-Gitlab-Event-UUID identifies the event, the same on a retry)
- bitbucket: https://support.atlassian.com/bitbucket-cloud/docs/manage-webhooks/ (X-Hub-Signature:
  sha256=<hex HMAC-SHA256 of the body>; X-Request-UUID per request, X-Event-Key)
- shopify: https://shopify.dev/docs/apps/build/webhooks/verify-deliveries (X-Shopify-Hmac-SHA256:
  base64 HMAC-SHA256 of the raw body with the client secret; duplicates by X-Shopify-Webhook-Id)
- svix: https://docs.svix.com/receiving/verifying-payloads/how-manual (Standard Webhooks with
  svix-id, svix-timestamp, svix-signature); the values are the published Standard Webhooks vector
- linear: https://linear.app/developers/webhooks (Linear-Signature: hex HMAC-SHA256 of the body;
  Linear-Delivery, Linear-Event)
- sentry: https://docs.sentry.io/organization/integrations/integration-platform/webhooks/
  (Sentry-Hook-Signature: hex HMAC-SHA256 with the client secret; Request-ID, Sentry-Hook-Resource)
- typeform: https://www.typeform.com/developers/webhooks/secure-your-webhooks/ (Typeform-Signature:
  sha256=<base64 HMAC-SHA256 of the payload>; the payload's event_id)
"""

import base64
import hashlib
import hmac

import pytest

from hookrun.config import ConfigError, InboundRequest, check_conditions
from hookrun.config.conditions import delivery_id, redact
from tests.config.one_trigger import with_condition

SECRET = "It's a Secret to Everybody"


def trigger(preset: str, secret: str = SECRET):
    return with_condition(f'{{preset: {preset}, secret: "{secret}"}}')


def hmac_hex(body: bytes, secret: str = SECRET) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def hmac_b64(body: bytes, secret: str = SECRET) -> str:
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


GITLAB_BODY = b'{"object_kind":"push","ref":"refs/heads/main","checkout_sha":"da1560886d4f"}'
BITBUCKET_BODY = b'{"push":{"changes":[{"new":{"name":"main","type":"branch"}}]}}'
SHOPIFY_BODY = b'{"id":820982911946154508,"email":"jon@example.com","total_price":"403.00"}'
LINEAR_BODY = b'{"action":"create","type":"Issue","data":{"id":"2174add1"},"webhookTimestamp":1}'
SENTRY_BODY = b'{"action":"created","installation":{"uuid":"a8e5d37a"},"data":{"issue":{}}}'
TYPEFORM_BODY = b'{"event_id":"01GV4CB8KH1HCRMZPCYSWQ6J0X","event_type":"form_response"}'
SVIX_BODY = b'{"test": 2432232314}'
SVIX_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SVIX_TIMESTAMP = 1614265330

#: preset -> (body, headers as the provider sends them, the delivery id, the secret header)
EXAMPLES = {
    "gitlab": (
        GITLAB_BODY,
        {
            "X-Gitlab-Event": "Push Hook",
            "X-Gitlab-Token": SECRET,
            "X-Gitlab-Event-UUID": "13792a34-cac6-4fda-95a8-c58e00a3954e",
        },
        "13792a34-cac6-4fda-95a8-c58e00a3954e",
        "x-gitlab-token",
    ),
    "bitbucket": (
        BITBUCKET_BODY,
        {
            "X-Event-Key": "repo:push",
            "X-Request-UUID": "afe50f5b-6a56-4fd4-a34c-f4e3e0d4f5fa",
            "X-Hub-Signature": "sha256=" + hmac_hex(BITBUCKET_BODY),
        },
        "afe50f5b-6a56-4fd4-a34c-f4e3e0d4f5fa",
        "x-hub-signature",
    ),
    "shopify": (
        SHOPIFY_BODY,
        {
            "X-Shopify-Topic": "orders/create",
            "X-Shopify-Hmac-SHA256": hmac_b64(SHOPIFY_BODY),
            "X-Shopify-Webhook-Id": "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043",
            "X-Shopify-Event-Id": "98880550-7158-44d4-b7cd-2c97c8a091b5",
        },
        "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043",
        "x-shopify-hmac-sha256",
    ),
    "linear": (
        LINEAR_BODY,
        {
            "Linear-Event": "Issue",
            "Linear-Delivery": "234d1a4e-b617-4388-90fe-adc3633d6b72",
            "Linear-Signature": hmac_hex(LINEAR_BODY),
        },
        "234d1a4e-b617-4388-90fe-adc3633d6b72",
        "linear-signature",
    ),
    "sentry": (
        SENTRY_BODY,
        {
            "Request-ID": "dd5b6a0a-0a5c-4b2a-93b5-0a7f4f2e2c11",
            "Sentry-Hook-Resource": "issue",
            "Sentry-Hook-Timestamp": "1700000000",
            "Sentry-Hook-Signature": hmac_hex(SENTRY_BODY),
        },
        "dd5b6a0a-0a5c-4b2a-93b5-0a7f4f2e2c11",
        "sentry-hook-signature",
    ),
    "typeform": (
        TYPEFORM_BODY,
        {"Typeform-Signature": "sha256=" + hmac_b64(TYPEFORM_BODY)},
        "01GV4CB8KH1HCRMZPCYSWQ6J0X",
        "typeform-signature",
    ),
}


def request(body: bytes, headers: dict[str, str]) -> InboundRequest:
    return InboundRequest("POST", "/", {"Content-Type": "application/json", **headers}, body=body)


@pytest.mark.parametrize("preset", sorted(EXAMPLES))
class TestProviderPresets:
    def test_a_request_as_the_provider_sends_it_passes(self, preset):
        body, headers, _, _ = EXAMPLES[preset]
        verdict = check_conditions(trigger(preset), request(body, headers), 1_700_000_000)
        assert verdict.ok, verdict.reason

    def test_a_changed_body_or_another_secret_is_refused(self, preset):
        body, headers, _, _ = EXAMPLES[preset]
        t = trigger(preset)
        if preset != "gitlab":  # GitLab's token does not sign the body
            assert not check_conditions(t, request(body + b" ", headers), 1_700_000_000).ok
        other = trigger(preset, secret="another secret")
        assert not check_conditions(other, request(body, headers), 1_700_000_000).ok

    def test_the_providers_delivery_id_dedupes(self, preset):
        body, headers, expected, _ = EXAMPLES[preset]
        assert delivery_id(trigger(preset), request(body, headers)) == expected

    def test_the_secret_bearing_header_is_stored_redacted(self, preset):
        body, headers, _, secret_header = EXAMPLES[preset]
        stored, _ = redact(trigger(preset), request(body, headers))
        assert stored[secret_header] == "[redacted]"


class TestSvix:
    def test_the_standard_webhooks_vector_with_svix_headers_passes_and_dedupes(self):
        headers = {
            "svix-id": "msg_p5jXN8AQM9LWM0D4loKWxJek",
            "svix-timestamp": str(SVIX_TIMESTAMP),
            "svix-signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
        }
        t = trigger("svix", SVIX_SECRET)
        verdict = check_conditions(t, request(SVIX_BODY, headers), SVIX_TIMESTAMP)
        assert verdict.ok, verdict.reason
        assert delivery_id(t, request(SVIX_BODY, headers)) == "msg_p5jXN8AQM9LWM0D4loKWxJek"
        tampered = request(SVIX_BODY.replace(b"2432232314", b"2432232315"), headers)
        assert not check_conditions(t, tampered, SVIX_TIMESTAMP).ok


def test_an_unknown_preset_names_the_known_ones():
    with pytest.raises(ConfigError) as exc:
        trigger("gitea")
    for name in ("gitlab", "bitbucket", "shopify", "svix", "linear", "sentry", "typeform"):
        assert name in str(exc.value)
