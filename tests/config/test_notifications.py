"""A trigger's notifications: status filters, extra headers and signing secrets."""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from hookrun.config import HookrunConfig
from tests.config.conftest import WHSEC
from tests.config.test_loader import errors_of

Parse = Callable[[dict[str, Any]], HookrunConfig]


def sub(data: dict[str, Any]) -> dict[str, Any]:
    subscription: dict[str, Any] = data["triggers"][0]["notifications"][0]
    return subscription


class TestStatusesAndHeaders:
    def test_statuses_and_headers_load(self, parse: Parse, data: dict, monkeypatch) -> None:
        monkeypatch.setenv("HOOK_ENV", "prod")
        sub(data).update(statuses=["FAILURE", "TIMED_OUT"], headers={"X-Env": "${env:HOOK_ENV}"})
        [n] = parse(data).triggers[0].notifications
        assert n.statuses == ("FAILURE", "TIMED_OUT")
        assert n.headers == {"X-Env": "prod"}

    def test_an_unknown_status_names_the_field(self, parse: Parse, data: dict) -> None:
        sub(data).update(statuses=["FAILED"])
        [error] = errors_of(parse, data)
        assert error.startswith("hookrun.yaml: triggers[0].notifications[0].statuses[0]: ")
        assert "'FAILURE'" in error

    def test_an_empty_statuses_list_is_refused(self, parse: Parse, data: dict) -> None:
        sub(data).update(statuses=[])
        [error] = errors_of(parse, data)
        assert error.startswith("hookrun.yaml: triggers[0].notifications[0].statuses: ")

    @pytest.mark.parametrize(
        "name",
        [
            "Webhook-Signature",
            "webhook-id",
            "X-Trigger-Signature-256",
            "Connection",
            "Transfer-Encoding",
            "Host",
            "Content-Type",
            "traceparent",
        ],
    )
    def test_a_signature_or_hop_by_hop_header_may_not_be_overridden(
        self, parse: Parse, data: dict, name: str
    ) -> None:
        sub(data).update(headers={name: "x"})
        assert errors_of(parse, data) == [
            f"hookrun.yaml: triggers[0].notifications[0].headers: header {name} may not be set:"
            " hookrun sets it (hop-by-hop or signature)"
        ]

    @pytest.mark.parametrize(
        ("headers", "why"),
        [
            ({"X Env": "prod"}, "header 'X Env': not a valid header name"),
            ({"X-Env": "a\r\nX-Injected: 1"}, "header X-Env: the value must be printable ASCII"),
        ],
    )
    def test_a_header_that_cannot_be_sent_is_refused(
        self, parse: Parse, data: dict, headers: dict, why: str
    ) -> None:
        sub(data).update(headers=headers)
        [error] = errors_of(parse, data)
        assert error.startswith(f"hookrun.yaml: triggers[0].notifications[0].headers: {why}")


class TestSecrets:
    def test_a_whsk_secret_key_signs_v1a_beside_a_whsec_secret(self, parse: Parse, data: dict):
        key = Ed25519PrivateKey.generate()
        whsk = "whsk_" + base64.b64encode(key.private_bytes_raw()).decode()
        sub(data).update(secret=[WHSEC, whsk])
        keys = parse(data).triggers[0].notifications[0].signing_keys
        assert len(keys.hmac) == 1 and keys.trigger_secret == WHSEC
        [ed25519] = keys.ed25519
        assert ed25519.private_bytes_raw() == key.private_bytes_raw()

    @pytest.mark.parametrize(
        ("secret", "why"),
        [
            ("whsk_!!!", "must be 'whsk_' followed by base64"),
            ("whsk_" + base64.b64encode(b"short").decode(), "32- or 64-byte ed25519 key"),
            ("plain-secret", "must start with 'whsec_' (v1, HMAC) or 'whsk_' (v1a, ed25519)"),
        ],
    )
    def test_a_bad_secret_names_the_field_but_not_the_value(
        self, parse: Parse, data: dict, secret: str, why: str
    ) -> None:
        sub(data).update(secret=secret)
        [error] = errors_of(parse, data)
        assert error.startswith("hookrun.yaml: triggers[0].notifications[0].secret: ")
        assert why in error and secret not in error
