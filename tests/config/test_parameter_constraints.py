"""String parameters: `pattern`, `enum`, `max_length`, and payload values that look like options."""

from __future__ import annotations

from typing import Any

import pytest

from hookrun.config import ParameterError, Step, reads_payload, resolve_parameters
from tests.config.test_loader import Parse, errors_of


def step(*parameters: dict[str, Any]) -> Step:
    return Step(name="s", command=("prog",), parameters=parameters)


TARGET = {"name": "target", "type": "string"}


def resolve(s: Step, value: Any, *, from_payload: bool = True) -> Any:
    names = {"target"} if from_payload else set()
    return resolve_parameters(s, {"target": value}, from_payload=names)["target"]


def reason(s: Step, value: Any, *, from_payload: bool = True) -> str:
    with pytest.raises(ParameterError) as caught:
        resolve(s, value, from_payload=from_payload)
    assert caught.value.name == "target"
    return caught.value.reason


class TestPayloadValues:
    @pytest.mark.parametrize("value", ["--rm", "-rf", "-", "--output=/etc/passwd", "-5"])
    def test_a_payload_value_that_starts_with_a_dash_is_refused(self, value: str) -> None:
        assert reason(step(TARGET), value) == (
            f"the value from the payload starts with '-' ({value!r}), so a command could take "
            "it for an option (declare a pattern that admits such values)"
        )

    def test_a_negative_number_for_a_string_parameter_is_refused_too(self) -> None:
        assert "starts with '-' ('-5')" in reason(step(TARGET), -5)

    @pytest.mark.parametrize(
        "value", ["a\nb", "tab\there", "nul\x00", "bell\x07", "del\x7f", "c1\x85", "esc\x1b[2J"]
    )
    def test_a_payload_value_with_a_control_character_is_refused(self, value: str) -> None:
        text = reason(step(TARGET), value)
        assert text.startswith("the value from the payload holds a control character")
        # the message shows the value escaped: it holds no control character itself
        assert repr(value) in text
        assert not any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in text)

    @pytest.mark.parametrize("value", ["main", "a-b", "x--y", "name with spaces", "ünïcödé", ""])
    def test_ordinary_payload_values_pass_unchanged(self, value: str) -> None:
        assert resolve(step(TARGET), value) == value

    def test_the_same_values_written_in_the_config_are_not_the_payloads(self) -> None:
        assert resolve(step(TARGET), "--verbose", from_payload=False) == "--verbose"
        assert resolve(step(TARGET), "a\tb", from_payload=False) == "a\tb"

    def test_a_pattern_that_admits_the_value_lets_it_through(self) -> None:
        s = step({**TARGET, "pattern": r"--?[a-z]+|[^\n]*\t[^\n]*"})
        assert resolve(s, "--rm") == "--rm"
        assert resolve(s, "a\tb") == "a\tb"

    def test_a_pattern_that_does_not_admit_the_value_names_the_pattern(self) -> None:
        s = step({**TARGET, "pattern": "[a-z]+"})
        assert reason(s, "--rm") == "'--rm' does not match pattern '[a-z]+'"

    def test_a_listed_enum_value_is_admitted(self) -> None:
        s = step({**TARGET, "enum": ["-v", "-q"]})
        assert resolve(s, "-v") == "-v"
        assert reason(s, "-x") == "'-x' is not one of ['-v', '-q']"

    def test_integers_floats_and_flags_are_numbers_and_booleans_not_options(self) -> None:
        s = step(
            {"name": "n", "type": "integer"},
            {"name": "f", "type": "float"},
            {"name": "on", "type": "flag"},
        )
        values = {"n": "-3", "f": -1.5, "on": "true"}
        assert resolve_parameters(s, values, from_payload=set(values)) == {
            "n": -3,
            "f": -1.5,
            "on": True,
        }


class TestConstraints:
    def test_the_pattern_must_match_the_whole_value(self) -> None:
        s = step({**TARGET, "pattern": "[a-z]+"})
        assert resolve(s, "abc", from_payload=False) == "abc"
        assert reason(s, "abc1", from_payload=False) == "'abc1' does not match pattern '[a-z]+'"
        assert reason(s, "1abc", from_payload=False) == "'1abc' does not match pattern '[a-z]+'"

    def test_max_length_counts_characters_and_is_checked_before_the_pattern(self) -> None:
        assert resolve(step({**TARGET, "max_length": 3}), "äöü") == "äöü"
        s = step({**TARGET, "max_length": 3, "pattern": "(a+)+b"})
        # 40 characters that would backtrack for a long time in "(a+)+b" never reach it
        assert reason(s, "a" * 40) == f"{'a' * 40!r} is 40 characters long, over max_length 3"

    def test_a_long_value_is_cut_in_the_message(self) -> None:
        s = step({**TARGET, "max_length": 5})
        text = reason(s, "x" * 10_000)
        assert len(text) < 120 and text.endswith("is 10000 characters long, over max_length 5")

    def test_constraints_apply_to_defaults_and_literal_values_too(self) -> None:
        s = step({**TARGET, "enum": ["a", "b"], "default": "a"})
        assert resolve_parameters(s, {}) == {"target": "a"}
        assert reason(s, "c", from_payload=False) == "'c' is not one of ['a', 'b']"


class TestReadsPayload:
    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            ("{payload.ref}", True),
            ("--ref={payload.ref}", True),
            ("{payload.items[0].name}", True),
            ("{parameters.x}", False),
            ("plain", False),
            ("{payloadish}", False),
            (7, False),
            (None, False),
        ],
    )
    def test_a_payload_template_anywhere_in_the_value(self, value: Any, expected: bool) -> None:
        assert reads_payload(value) is expected


class TestConfigErrors:
    @staticmethod
    def with_parameter(data: dict, **fields: Any) -> dict:
        step = data["steps"][0]
        step["command"].append("{parameters.target}")
        step["parameters"].append({"name": "target", "type": "string", **fields})
        return data

    def test_a_bad_regular_expression_says_where_and_why(self, parse: Parse, data: dict) -> None:
        self.with_parameter(data, pattern="[a-z")
        assert errors_of(parse, data) == [
            "hookrun.yaml: steps[0].parameters[1].pattern: invalid regular expression: "
            "unterminated character set at position 0"
        ]

    @pytest.mark.parametrize(
        ("field", "value"), [("pattern", "[0-9]+"), ("enum", ["1"]), ("max_length", 3)]
    )
    def test_constraints_belong_to_string_parameters_only(
        self, parse: Parse, data: dict, field: str, value: Any
    ) -> None:
        data["steps"][0]["parameters"][0][field] = value
        assert errors_of(parse, data) == [
            f"hookrun.yaml: steps[0].parameters[0].{field}: "
            f"only a string parameter takes {field} (this one is integer)"
        ]

    def test_enum_values_must_be_strings(self, parse: Parse, data: dict) -> None:
        self.with_parameter(data, enum=["a", 1])
        assert errors_of(parse, data) == [
            "hookrun.yaml: steps[0].parameters[1].enum[1]: input should be a valid string"
        ]

    def test_an_empty_enum_is_refused(self, parse: Parse, data: dict) -> None:
        self.with_parameter(data, enum=[])
        assert errors_of(parse, data) == [
            "hookrun.yaml: steps[0].parameters[1].enum: must not be empty"
        ]

    def test_an_enum_value_the_pattern_refuses_could_never_be_used(
        self, parse: Parse, data: dict
    ) -> None:
        self.with_parameter(data, pattern="[a-z]+", enum=["main", "Main"])
        assert errors_of(parse, data) == [
            "hookrun.yaml: steps[0].parameters[1].enum: "
            "enum value 'Main' does not match pattern '[a-z]+'"
        ]

    def test_max_length_must_be_positive(self, parse: Parse, data: dict) -> None:
        self.with_parameter(data, max_length=0)
        assert errors_of(parse, data) == [
            "hookrun.yaml: steps[0].parameters[1].max_length: "
            "input should be greater than or equal to 1"
        ]

    def test_a_default_must_satisfy_the_constraints(self, parse: Parse, data: dict) -> None:
        self.with_parameter(data, max_length=4, default="release")
        assert errors_of(parse, data) == [
            "hookrun.yaml: steps[0].parameters[1].default: "
            "'release' is 7 characters long, over max_length 4"
        ]

    def test_a_literal_action_value_must_satisfy_the_constraints(
        self, parse: Parse, data: dict
    ) -> None:
        self.with_parameter(data, enum=["main", "dev"])
        data["triggers"][0]["actions"][0]["parameters"]["target"] = "prod"
        assert errors_of(parse, data) == [
            "hookrun.yaml: triggers[0].actions[0].parameters.target: "
            "'prod' is not one of ['main', 'dev']"
        ]

    def test_a_payload_template_is_checked_per_run_not_at_load(
        self, parse: Parse, data: dict
    ) -> None:
        self.with_parameter(data, enum=["main", "dev"])
        data["triggers"][0]["actions"][0]["parameters"]["target"] = "{payload.target}"
        config = parse(data)
        [target] = [p for p in config.steps[0].parameters if p.name == "target"]
        assert target.enum == ("main", "dev")
