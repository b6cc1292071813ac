"""Signing requests as triggers' conditions require: every type and preset, round-tripped."""

from collections.abc import Callable
from typing import Any

import orjson
import pytest

from hookrun.config import InboundRequest, Trigger, check_conditions
from hookrun.config.model.conditions import CONDITION_TYPES, PRESETS
from hookrun.config.signing import (
    SIGNERS,
    OutgoingRequest,
    SigningError,
    SigningOptions,
    sign_request,
)

NOW = 1_700_000_000.0
BODY = orjson.dumps({"batch_size": 16, "records": [1, 2, 3]})
WHSEC = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

#: Condition type -> configs to sign with (each variant the signer must get right). A new
#: condition type without an entry here fails test_every_condition_type_round_trips.
EXAMPLES: dict[str, list[dict[str, Any]]] = {
    "hmac": [
        {"type": "hmac", "header": "X-Hub-Signature-256", "secret": "gh", "prefix": "sha256="},
        {"type": "hmac", "header": "X-Sig", "secret": "s", "algorithm": "sha1"},
        {
            "type": "hmac",
            "header": "X-Sig",
            "secret": "s",
            "algorithm": "sha512",
            "encoding": "base64",
        },
    ],
    "static_secret": [
        {"type": "static_secret", "header": "X-Token", "secret": "tok"},
        {"type": "static_secret", "query": "token", "secret": "tok"},
    ],
    "standard_webhooks": [
        {"type": "standard_webhooks", "secret": WHSEC},
        {"type": "standard_webhooks", "secret": "raw-secret"},
    ],
    "stripe": [{"type": "stripe", "secret": "whsec_stripe"}],
    "slack": [{"type": "slack", "secret": "slack-signing"}],
    "ip_allow": [{"type": "ip_allow", "cidrs": ["127.0.0.0/8"]}],
    "jwt": [
        {"type": "jwt", "secret": "j" * 32, "algorithms": ["HS256"], "issuer": "i"},
        {"type": "jwt", "secret": "j" * 64, "algorithms": ["HS512"], "query": "jwt"},
        {
            "type": "jwt",
            "secret": "j" * 48,
            "algorithms": ["HS384"],
            "cookie": "s",
            "audience": ["a", "b"],
        },
    ],
}

#: Fields a preset needs besides a secret; presets not listed get {"secret": WHSEC}.
PRESET_FIELDS: dict[str, dict[str, Any]] = {}


@pytest.fixture
def trigger_with(
    data: dict[str, Any], parse: Callable[[dict[str, Any]], Any]
) -> Callable[[list[dict[str, Any]]], Trigger]:
    def _trigger(conditions: list[dict[str, Any]]) -> Trigger:
        data["triggers"][0]["conditions"] = conditions
        trigger: Trigger = parse(data).triggers[0]
        return trigger

    return _trigger


def received(out: OutgoingRequest, body: bytes | None = None) -> InboundRequest:
    """The request as the gateway sees it after ``out`` was sent from 127.0.0.1."""
    return InboundRequest(
        method="POST",
        path="/api/v0/launch/feature-extraction/",
        headers=out.headers,
        query=out.query,
        body=out.body if body is None else body,
        remote_addr="127.0.0.1",
    )


def signed(trigger: Trigger, body: bytes = BODY) -> OutgoingRequest:
    return sign_request(trigger, OutgoingRequest(body=body), SigningOptions(now=NOW))


def test_every_condition_type_has_a_signer(
    trigger_with: Callable[[list[dict[str, Any]]], Trigger],
) -> None:
    for name in CONDITION_TYPES:
        assert name in EXAMPLES, f"add an example of condition type {name!r} to EXAMPLES"
        condition = trigger_with(EXAMPLES[name][:1]).conditions[0]
        assert type(condition) in SIGNERS, f"condition type {name!r} has no signer in SIGNERS"


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_preset_signs_and_verifies(
    trigger_with: Callable[[list[dict[str, Any]]], Trigger], preset: str
) -> None:
    fields = PRESET_FIELDS.get(preset, {"secret": WHSEC})
    trigger = trigger_with([{"preset": preset, **fields}])
    verdict = check_conditions(trigger, received(signed(trigger)), NOW)
    assert verdict.ok, verdict.reason


@pytest.mark.parametrize(
    "condition",
    [c for name in CONDITION_TYPES for c in EXAMPLES.get(name, [])],
    ids=lambda c: "-".join(str(v) for v in c.values() if isinstance(v, str))[:40],
)
def test_every_condition_type_round_trips(
    trigger_with: Callable[[list[dict[str, Any]]], Trigger], condition: dict[str, Any]
) -> None:
    trigger = trigger_with([condition])
    out = signed(trigger)
    verdict = check_conditions(trigger, received(out), NOW + 5)
    assert verdict.ok, verdict.reason
    if trigger.signs_body:
        # the signature covers the body: another body with the same headers is refused
        tampered = check_conditions(trigger, received(out, body=BODY + b" "), NOW + 5)
        assert not tampered.ok


def test_all_conditions_of_a_trigger_are_signed_together(
    trigger_with: Callable[[list[dict[str, Any]]], Trigger],
) -> None:
    everything = [examples[0] for examples in EXAMPLES.values()]
    trigger = trigger_with(everything)
    assert check_conditions(trigger, received(signed(trigger)), NOW).ok


def test_a_signature_from_long_ago_is_refused(
    trigger_with: Callable[[list[dict[str, Any]]], Trigger],
) -> None:
    trigger = trigger_with([{"type": "stripe", "secret": "s", "tolerance_s": 60}])
    verdict = check_conditions(trigger, received(signed(trigger)), NOW + 3600)
    assert not verdict.ok and "outside tolerance" in verdict.reason


def test_a_signer_error_names_the_condition(
    trigger_with: Callable[[list[dict[str, Any]]], Trigger], monkeypatch: pytest.MonkeyPatch
) -> None:
    trigger = trigger_with([EXAMPLES["static_secret"][0], EXAMPLES["stripe"][0]])

    def needs_a_key(c: Any, out: OutgoingRequest, opts: SigningOptions) -> None:
        raise SigningError("needs a private key: pass --private-key FILE")

    monkeypatch.setitem(SIGNERS, type(trigger.conditions[1]), needs_a_key)
    with pytest.raises(SigningError, match=r"^conditions\[1\] \(stripe\): needs a private key"):
        signed(trigger)
