"""Inbound Standard Webhooks `v1a` (ed25519, `whpk_` public keys), against the spec's vectors.

The vector: the Standard Webhooks specification's example `webhook-signature` header
(https://github.com/standard-webhooks/standard-webhooks/blob/main/spec/standard-webhooks.md,
"Webhook headers") carries the `v1a` signature that Svix's reference server produces in its
`test_asymmetric_key_signing` test (https://github.com/svix/svix-webhooks, server/svix-server)
for the key pair, message id, timestamp and payload below. The `v1` vector (same message) is
the one the reference libraries in github.com/standard-webhooks/standard-webhooks test against.
"""

import base64
import time

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from hookrun.config import ConfigError, InboundRequest, check_conditions
from hookrun.config.signing import OutgoingRequest, SigningError, SigningOptions, sign_request
from tests.config.one_trigger import with_condition

WHSK = (
    "whsk_6Xb/dCcHpPea21PS1N9VY/NZW723CEc77N4rJCubMbfVKIDij2HKpMKkioLlX0dRqSKJp4AJ6p9lMicMFs6Kvg=="
)
WHPK = "whpk_1SiA4o9hyqTCpIqC5V9HUakiiaeACeqfZTInDBbOir4="
MSG_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
TIMESTAMP = 1614265330
PAYLOAD = b'{"test": 2432232314}'
V1A = "v1a,hnO3f9T8Ytu9HwrXslvumlUpqtNVqkhqw/enGzPCXe5BdqzCInXqYXFymVJaA7AZdpXwVLPo3mNl8EM+m7TBAg=="
WHSEC = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
V1 = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def trigger(condition: str):
    return with_condition(condition)


def request(signature: str, body: bytes = PAYLOAD, msg_id: str = MSG_ID) -> InboundRequest:
    headers = {
        "webhook-id": msg_id,
        "webhook-timestamp": str(TIMESTAMP),
        "webhook-signature": signature,
    }
    return InboundRequest("POST", "/", headers, body=body)


V1A_ONLY = f'{{type: standard_webhooks, public_key: "{WHPK}"}}'
BOTH = f'{{type: standard_webhooks, secret: "{WHSEC}", public_key: "{WHPK}"}}'


class TestVerifying:
    def test_the_specs_v1a_signature_verifies_with_its_public_key(self):
        verdict = check_conditions(trigger(V1A_ONLY), request(V1A), TIMESTAMP + 10)
        assert verdict.ok, verdict.reason

    def test_the_specs_example_header_with_both_signatures_passes_either_way(self):
        both = f"{V1} {V1A}"
        assert check_conditions(trigger(BOTH), request(both), TIMESTAMP).ok
        # a v1a-only receiver skips the v1 entry and finds the v1a one
        assert check_conditions(trigger(V1A_ONLY), request(both), TIMESTAMP).ok
        # an HMAC-only receiver ignores the v1a entry
        hmac_only = trigger(f'{{type: standard_webhooks, secret: "{WHSEC}"}}')
        assert check_conditions(hmac_only, request(both), TIMESTAMP).ok
        assert not check_conditions(hmac_only, request(V1A), TIMESTAMP).ok

    @pytest.mark.parametrize(
        "tampered",
        [
            request(V1A, body=b'{"test": 2432232315}'),
            request(V1A, msg_id="msg_other"),
            request("v1," + V1A.removeprefix("v1a,")),  # an ed25519 signature labelled v1
            request("v1a,not base64!"),
            request("v1a,AAAA"),  # base64, but not 64 bytes
        ],
    )
    def test_a_changed_body_or_id_or_a_malformed_signature_is_refused(self, tampered):
        verdict = check_conditions(trigger(V1A_ONLY), tampered, TIMESTAMP)
        assert not verdict.ok
        assert verdict.reason.endswith("signature mismatch")

    def test_another_key_pairs_signature_is_refused(self):
        other = Ed25519PrivateKey.generate()
        signature = other.sign(f"{MSG_ID}.{TIMESTAMP}.".encode() + PAYLOAD)
        forged = "v1a," + base64.b64encode(signature).decode()
        assert not check_conditions(trigger(V1A_ONLY), request(forged), TIMESTAMP).ok

    def test_the_timestamp_tolerance_applies_to_v1a_too(self):
        verdict = check_conditions(trigger(V1A_ONLY), request(V1A), TIMESTAMP + 301)
        assert verdict.reason.endswith("timestamp outside tolerance (301s > 300s)")


class TestSigning:
    def test_signing_with_the_specs_secret_key_reproduces_its_signature(self):
        out = OutgoingRequest(body=PAYLOAD, headers={"webhook-id": MSG_ID})
        sign_request(
            trigger(V1A_ONLY), out, SigningOptions(now=TIMESTAMP, private_key=WHSK.encode())
        )
        assert out.headers["webhook-signature"] == V1A
        assert out.headers["webhook-timestamp"] == str(TIMESTAMP)

    def test_signing_v1a_needs_the_matching_private_key(self):
        with pytest.raises(SigningError, match="needs the private key"):
            sign_request(trigger(V1A_ONLY), OutgoingRequest(body=b"{}"), SigningOptions(now=1))
        other = "whsk_" + base64.b64encode(b"\x01" * 32).decode()
        with pytest.raises(SigningError, match="not the one of the condition's 'whpk_' key"):
            sign_request(
                trigger(V1A_ONLY),
                OutgoingRequest(body=b"{}"),
                SigningOptions(now=time.time(), private_key=other.encode()),
            )


class TestConfigErrors:
    @pytest.mark.parametrize(
        ("condition", "error"),
        [
            (
                f'{{type: standard_webhooks, secret: "{WHPK}"}}',
                "conditions[0].secret: a 'whpk_' public key goes in 'public_key'",
            ),
            (
                '{type: standard_webhooks, public_key: "whpk_AAAA"}',
                "conditions[0].public_key: must be 'whpk_' followed by a 32-byte ed25519",
            ),
            (
                f'{{type: standard_webhooks, public_key: "{WHSK}"}}',
                "conditions[0].public_key: must start with 'whpk_'",
            ),
            ("{type: standard_webhooks}", "conditions[0]: give 'secret' (whsec_, for v1)"),
        ],
    )
    def test_a_bad_key_is_a_config_error_naming_the_field(self, condition, error):
        with pytest.raises(ConfigError) as exc:
            trigger(condition)
        assert f"hookrun.yaml: triggers[0].{error}" in str(exc.value)
