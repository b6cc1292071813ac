"""Secrets never show up in repr, str, JSON dumps or error messages."""

from collections.abc import Callable
from typing import Any

import pytest

from hookrun.config import ConfigError, HookrunConfig

from .conftest import GH_SECRET, TOKEN, WHSEC

Parse = Callable[[dict[str, Any]], HookrunConfig]
SECRETS = (GH_SECRET, TOKEN, WHSEC, WHSEC.removeprefix("whsec_"))


def test_dumps_and_repr_of_a_loaded_config_hold_no_secret(parse: Parse, data: dict) -> None:
    data["triggers"][0]["notifications"][0]["secret"] = [WHSEC, "whsec_cm90YXRlZC1zZWNyZXQ="]
    config = parse(data)
    outputs = [
        repr(config),
        str(config),
        config.model_dump_json(),
        str(config.model_dump(mode="json")),
        str(config.model_dump()),
        repr(config.triggers[0].conditions[0]),
    ]
    for output in outputs:
        for secret in (*SECRETS, "cm90YXRlZC1zZWNyZXQ="):
            assert secret not in output
    # The values are still there for the code that needs them.
    assert config.triggers[0].conditions[0].secret.get_secret_value() == GH_SECRET
    assert config.triggers[0].notifications[0].signing_keys.hmac[1] == b"rotated-secret"


@pytest.mark.parametrize(
    "breakage",
    [
        lambda d: d["triggers"][0]["conditions"][0].update(algorithm="md5"),
        lambda d: d["triggers"][0]["conditions"][1].update(header=None),
        lambda d: d["triggers"][0]["notifications"][0].update(secret=GH_SECRET),
        lambda d: d["triggers"][0]["conditions"].append({"type": "stripe", "secret": [TOKEN]}),
        lambda d: d["triggers"][0]["conditions"].append(
            {"type": "standard_webhooks", "secret": "whsec_" + TOKEN + "!"}
        ),
    ],
)
def test_error_messages_never_include_a_secret(
    parse: Parse, data: dict, breakage: Callable[[dict], None]
) -> None:
    breakage(data)
    with pytest.raises(ConfigError) as caught:
        parse(data)
    message = str(caught.value)
    for secret in (*SECRETS, "whsec_" + TOKEN):
        assert secret not in message
    assert message.startswith("hookrun.yaml: triggers[0].")


def test_yaml_errors_do_not_quote_the_offending_line() -> None:
    from hookrun.config import parse_config

    text = f"project:\n  secret: {GH_SECRET}: oops\n"
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "hookrun.yaml")
    assert GH_SECRET not in str(caught.value)
