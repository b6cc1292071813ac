"""Launch responses, payload templates, parameter coercion and command rendering."""

from collections.abc import Callable
from typing import Any

import orjson
import pytest

from hookrun.config import (
    HookrunConfig,
    Parameter,
    ParameterError,
    PayloadPathError,
    Response,
    Step,
    coerce_parameter,
    render_command,
    render_response,
    resolve_parameters,
    resolve_template,
)

RUN_ID = "run-0f3c"


class TestRenderResponse:
    def test_text_response_replaces_every_run_id(self) -> None:
        response = Response(text="Created run {run_id} ({run_id})")
        assert render_response(response, RUN_ID) == (
            "text/plain; charset=utf-8",
            b"Created run run-0f3c (run-0f3c)",
        )

    def test_json_response_replaces_run_id_in_strings_at_any_depth_but_not_in_keys(self) -> None:
        response = Response.model_validate(
            {
                "json": {
                    "status": "success",
                    "run_id": "{run_id}",
                    "nested": {"id": "run={run_id}", "list": [{"{run_id}": ["{run_id}", 3]}]},
                    "n": 1,
                    "none": None,
                }
            }
        )
        content_type, body = render_response(response, RUN_ID)
        assert content_type == "application/json"
        assert orjson.loads(body) == {
            "status": "success",
            "run_id": RUN_ID,
            "nested": {"id": f"run={RUN_ID}", "list": [{"{run_id}": [RUN_ID, 3]}]},
            "n": 1,
            "none": None,
        }

    def test_json_response_may_be_a_bare_string(self) -> None:
        response = Response.model_validate({"json": "{run_id}"})
        assert render_response(response, RUN_ID) == ("application/json", b'"run-0f3c"')

    def test_no_response_answers_ok_true(self) -> None:
        assert render_response(None, RUN_ID) == ("application/json", b'{"ok":true}')

    def test_a_response_needs_exactly_one_of_text_and_json(self) -> None:
        with pytest.raises(ValueError, match="exactly one of 'text' or 'json'"):
            Response.model_validate({"text": "a", "json": {}})
        with pytest.raises(ValueError, match="exactly one of 'text' or 'json'"):
            Response.model_validate({})


class TestResolveTemplate:
    PAYLOAD = {"batch_size": 16, "data": {"items": [{"id": "a"}, {"id": "b"}]}, "ok": True}

    def test_a_whole_template_keeps_the_json_type(self) -> None:
        assert resolve_template("{payload.batch_size}", self.PAYLOAD) == 16
        assert resolve_template("{payload.ok}", self.PAYLOAD) is True
        assert resolve_template("{payload.data.items[1]}", self.PAYLOAD) == {"id": "b"}
        assert resolve_template("{payload}", self.PAYLOAD) == self.PAYLOAD

    def test_templates_inside_a_longer_string_are_stringified(self) -> None:
        value = "size={payload.batch_size} first={payload.data.items[0].id} ok={payload.ok}"
        assert resolve_template(value, self.PAYLOAD) == "size=16 first=a ok=true"

    def test_a_payload_that_is_a_list_can_be_indexed(self) -> None:
        assert resolve_template("{payload[1]}", ["x", "y"]) == "y"

    def test_parameters_can_be_referenced_when_given(self) -> None:
        assert resolve_template("{parameters.n}", {}, {"n": 3}) == 3
        with pytest.raises(PayloadPathError):
            resolve_template("{parameters.n}", {})

    def test_a_missing_path_raises_with_the_path(self) -> None:
        with pytest.raises(PayloadPathError) as caught:
            resolve_template("{payload.data.items[5].id}", self.PAYLOAD)
        assert caught.value.path == "payload.data.items[5].id"
        with pytest.raises(PayloadPathError):
            resolve_template("x {payload.nope}", self.PAYLOAD)

    def test_non_templates_pass_through(self) -> None:
        assert resolve_template(7, self.PAYLOAD) == 7
        assert resolve_template(["{payload.ok}"], self.PAYLOAD) == ["{payload.ok}"]
        assert resolve_template("{not_a_template}", self.PAYLOAD) == "{not_a_template}"
        assert resolve_template('{"json": 1}', self.PAYLOAD) == '{"json": 1}'


def param(type_: str, **fields: Any) -> Parameter:
    return Parameter.model_validate({"name": "p", "type": type_, **fields})


class TestCoerceParameter:
    @pytest.mark.parametrize(
        ("type_", "value", "expected"),
        [
            ("integer", 32, 32),
            ("integer", "32", 32),
            ("integer", " -4 ", -4),
            ("integer", 3.0, 3),
            ("float", "0.5", 0.5),
            ("float", 2, 2.0),
            ("string", "abc", "abc"),
            ("string", 12, "12"),
            ("flag", True, True),
            ("flag", "true", True),
            ("flag", "False", False),
        ],
    )
    def test_values_are_coerced_to_the_declared_type(
        self, type_: str, value: Any, expected: Any
    ) -> None:
        result = coerce_parameter(param(type_), value)
        assert result == expected
        assert type(result) is type(expected)

    @pytest.mark.parametrize(
        ("type_", "value", "reason"),
        [
            ("integer", "3.5", "expected an integer, got '3.5'"),
            ("integer", 3.5, "expected an integer, got 3.5"),
            ("integer", True, "expected an integer, got true"),
            ("float", "fast", "expected a number, got 'fast'"),
            ("float", "nan", "expected a finite number, got 'nan'"),
            ("string", {"a": 1}, 'expected a string, got {"a":1}'),
            ("flag", "yes", "expected true or false, got 'yes'"),
            ("flag", 1, "expected true or false, got 1"),
        ],
    )
    def test_bad_values_raise_with_a_clear_reason(
        self, type_: str, value: Any, reason: str
    ) -> None:
        with pytest.raises(ParameterError) as caught:
            coerce_parameter(param(type_), value)
        assert (caught.value.name, caught.value.reason) == ("p", reason)

    def test_none_is_only_accepted_for_optional_parameters(self) -> None:
        assert coerce_parameter(param("integer", optional=True), None) is None
        with pytest.raises(ParameterError, match="a value is required"):
            coerce_parameter(param("integer"), None)

    def test_defaults_are_stored_with_their_declared_type(self) -> None:
        assert param("integer", default="8").default == 8
        with pytest.raises(ValueError, match="expected an integer"):
            param("integer", default="eight")


@pytest.fixture
def step() -> Step:
    return Step.model_validate(
        {
            "name": "Train",
            "command": [
                "python3",
                "{config_dir}/train.py",
                "--epochs",
                "{parameters.epochs}",
                "--lr={parameters.lr}",
                "--verbose={parameters.verbose}",
                "{parameters.tag}",
            ],
            "parameters": [
                {"name": "epochs", "type": "integer", "default": 3},
                {"name": "lr", "type": "float"},
                {"name": "verbose", "type": "flag", "default": False},
                {"name": "tag", "type": "string", "optional": True},
            ],
        }
    )


class TestRenderCommand:
    def test_placeholders_are_replaced_with_typed_values(self, step: Step) -> None:
        argv = render_command(step, {"lr": "0.01", "tag": "nightly"}, "/srv/hookrun")
        assert argv == [
            "python3",
            "/srv/hookrun/train.py",
            "--epochs",
            "3",
            "--lr=0.01",
            "--verbose=false",
            "nightly",
        ]

    def test_an_optional_parameter_without_value_drops_its_argv_item(self, step: Step) -> None:
        argv = render_command(step, {"lr": 0.1, "verbose": "true", "epochs": "5"}, ".")
        assert argv == ["python3", "./train.py", "--epochs", "5", "--lr=0.1", "--verbose=true"]

    def test_a_required_parameter_without_value_is_an_error(self, step: Step) -> None:
        with pytest.raises(ParameterError) as caught:
            render_command(step, {}, ".")
        assert (caught.value.name, caught.value.reason) == ("lr", "a value is required")

    def test_undeclared_parameters_are_refused(self, step: Step) -> None:
        with pytest.raises(ParameterError, match="declares no such parameter"):
            resolve_parameters(step, {"lr": 1, "momentum": 0.9})

    def test_resolved_parameters_include_defaults_and_skip_unset_optionals(
        self, step: Step
    ) -> None:
        assert resolve_parameters(step, {"lr": "1e-3"}) == {
            "epochs": 3,
            "lr": 0.001,
            "verbose": False,
        }


class TestPipelineOrder:
    def test_topological_order_follows_edges_and_keeps_declaration_order_for_ties(
        self, data: dict[str, Any], parse: Callable[[dict[str, Any]], HookrunConfig]
    ) -> None:
        data["pipelines"][0] = {
            "name": "Diamond",
            "nodes": [
                {"name": "report", "step": "Train"},
                {"name": "b", "step": "Train"},
                {"name": "a", "step": "Extract"},
                {"name": "c", "step": "Train"},
            ],
            "edges": [
                {"from": "a", "to": "b"},
                {"from": "a", "to": "c"},
                {"from": "b", "to": "report"},
                {"from": "c", "to": "report"},
            ],
        }
        pipeline = parse(data).pipelines[0]
        assert pipeline.topological_order() == ("a", "b", "c", "report")
        assert pipeline.upstream("report") == ("b", "c")
        assert pipeline.downstream("a") == ("b", "c")
