"""Loading config files: env substitution, YAML errors and `file: path: reason` messages."""

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from hookrun.config import (
    ConfigError,
    HookrunConfig,
    UnresolvedEnvError,
    load_config,
    parse_config,
    resolve_env_refs,
)

Parse = Callable[[dict[str, Any]], HookrunConfig]
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "hookrun.yaml"


def errors_of(parse: Parse, data: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse(data)
    return str(caught.value).splitlines()


class TestErrorMessages:
    def test_missing_field_names_the_file_and_the_path(self, parse: Parse, data: dict) -> None:
        del data["triggers"][0]["conditions"][1]["secret"]
        assert errors_of(parse, data) == [
            "hookrun.yaml: triggers[0].conditions[1].secret: field required"
        ]

    def test_every_problem_gets_its_own_line(self, parse: Parse, data: dict) -> None:
        del data["triggers"][0]["conditions"][0]["header"]
        data["triggers"][0]["title"] = 5
        del data["project"]["slug"]
        assert errors_of(parse, data) == [
            "hookrun.yaml: project.slug: field required",
            "hookrun.yaml: triggers[0].title: input should be a valid string",
            "hookrun.yaml: triggers[0].conditions[0].header: field required",
        ]

    def test_unknown_step_reference_is_reported_at_the_action(
        self, parse: Parse, data: dict
    ) -> None:
        data["triggers"][0]["actions"][0]["step"] = "Extrakt"
        assert errors_of(parse, data) == [
            "hookrun.yaml: triggers[0].actions[0].step: unknown step 'Extrakt'"
        ]

    def test_cyclic_pipeline_names_the_cycle(self, parse: Parse, data: dict) -> None:
        data["pipelines"][0]["edges"].append({"from": "train", "to": "extract"})
        assert errors_of(parse, data) == [
            "hookrun.yaml: pipelines[0].edges: cycle extract -> train -> extract"
        ]

    def test_bad_payload_schema_says_where_in_the_schema(self, parse: Parse, data: dict) -> None:
        data["triggers"][0]["payload_schema"] = {"type": "objekt"}
        assert errors_of(parse, data) == [
            "hookrun.yaml: triggers[0].payload_schema: invalid JSON Schema at $.type: "
            "'objekt' is not valid under any of the given schemas"
        ]

    def test_bad_trigger_id_explains_the_allowed_form(self, parse: Parse, data: dict) -> None:
        data["triggers"][0]["id"] = "feature extraction/1"
        assert errors_of(parse, data) == [
            "hookrun.yaml: triggers[0].id: must be 1-128 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit"
        ]

    def test_unset_env_var_names_the_field_and_the_variable(
        self, parse: Parse, data: dict, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.delenv("HOOKRUN_TEST_UNSET", raising=False)
        data["triggers"][0]["conditions"][0]["secret"] = "${env:HOOKRUN_TEST_UNSET}"
        assert errors_of(parse, data) == [
            "hookrun.yaml: triggers[0].conditions[0].secret: "
            "environment variable HOOKRUN_TEST_UNSET is not set"
        ]

    def test_unknown_condition_type_points_at_type(self, parse: Parse, data: dict) -> None:
        data["triggers"][0]["conditions"][0]["type"] = "jwt2"
        [line] = errors_of(parse, data)
        assert line.startswith("hookrun.yaml: triggers[0].conditions[0].type: unknown value 'jwt2'")

    def test_missing_action_discriminator_is_a_required_field(
        self, parse: Parse, data: dict
    ) -> None:
        del data["triggers"][0]["actions"][0]["action"]
        assert errors_of(parse, data) == [
            "hookrun.yaml: triggers[0].actions[0].action: field required"
        ]

    def test_typo_in_a_key_is_an_unknown_field(self, parse: Parse, data: dict) -> None:
        data["triggers"][0]["conditions"][0]["algoritm"] = "sha1"
        assert errors_of(parse, data) == [
            "hookrun.yaml: triggers[0].conditions[0].algoritm: unknown field"
        ]

    def test_static_secret_needs_exactly_one_place(self, parse: Parse, data: dict) -> None:
        data["triggers"][0]["conditions"][1]["query"] = "token"
        assert errors_of(parse, data) == [
            "hookrun.yaml: triggers[0].conditions[1]: give exactly one of 'header' or 'query'"
        ]

    def test_undeclared_action_parameter_is_rejected(self, parse: Parse, data: dict) -> None:
        data["triggers"][0]["actions"][0]["parameters"]["epochs"] = 3
        assert errors_of(parse, data) == [
            "hookrun.yaml: triggers[0].actions[0].parameters.epochs: "
            "step 'Extract' has no parameter 'epochs'"
        ]

    def test_literal_action_parameter_must_fit_the_declared_type(
        self, parse: Parse, data: dict
    ) -> None:
        data["triggers"][0]["actions"][0]["parameters"]["batch_size"] = "3.5"
        assert errors_of(parse, data) == [
            "hookrun.yaml: triggers[0].actions[0].parameters.batch_size: "
            "expected an integer, got '3.5'"
        ]

    def test_payload_input_must_be_declared_by_the_step(self, parse: Parse, data: dict) -> None:
        data["triggers"][0]["actions"][0]["payload_input"] = "body"
        assert errors_of(parse, data) == [
            "hookrun.yaml: triggers[0].actions[0].payload_input: step 'Extract' has no input 'body'"
        ]

    def test_pipeline_payload_input_must_name_a_node_input(self, parse: Parse, data: dict) -> None:
        data["triggers"][0]["actions"].append(
            {"action": "run_pipeline", "pipeline": "Nightly", "payload_input": "train.payload"}
        )
        data["triggers"][0]["actions"].append(
            {"action": "run_pipeline", "pipeline": "Nightly", "payload_input": "deploy.payload"}
        )
        assert errors_of(parse, data) == [
            "hookrun.yaml: triggers[0].actions[1].payload_input: "
            "step 'Train' of node 'train' has no input 'payload'",
            "hookrun.yaml: triggers[0].actions[2].payload_input: "
            "must be '<node>.<input>' naming a node of pipeline 'Nightly'",
        ]

    def test_pipeline_references_are_checked(self, parse: Parse, data: dict) -> None:
        pipeline = data["pipelines"][0]
        pipeline["nodes"].append({"name": "extract", "step": "Deploy"})
        pipeline["edges"].append({"from": "train", "to": "publish"})
        assert errors_of(parse, data) == [
            "hookrun.yaml: pipelines[0].nodes[2].name: duplicate node name 'extract'",
            "hookrun.yaml: pipelines[0].nodes[2].step: unknown step 'Deploy'",
            "hookrun.yaml: pipelines[0].edges[1].to: unknown node 'publish'",
        ]

    def test_duplicate_names_and_ids_are_rejected(self, parse: Parse, data: dict) -> None:
        data["steps"].append(dict(data["steps"][1]))
        data["triggers"].append(dict(data["triggers"][0]))
        assert errors_of(parse, data) == [
            "hookrun.yaml: steps[2].name: duplicate step name 'Train'",
            "hookrun.yaml: triggers[1].id: duplicate trigger id 'feature-extraction'",
        ]

    def test_command_placeholder_must_name_a_declared_parameter(
        self, parse: Parse, data: dict
    ) -> None:
        data["steps"][1]["command"].append("--epochs={parameters.epochs}")
        assert errors_of(parse, data) == [
            "hookrun.yaml: steps[1].command[2]: unknown parameter 'epochs'"
        ]

    def test_unknown_preset_lists_the_known_ones(self, parse: Parse, data: dict) -> None:
        data["triggers"][0]["conditions"] = [{"preset": "gitea", "secret": "x"}]
        assert errors_of(parse, data) == [
            "hookrun.yaml: triggers[0].conditions[0]: unknown preset 'gitea' "
            "(expected one of github, stripe, slack, standard_webhooks, gitlab, bitbucket,"
            " shopify, svix, linear, sentry, typeform)"
        ]

    def test_notification_url_must_be_http(self, parse: Parse, data: dict) -> None:
        data["triggers"][0]["notifications"][0]["url"] = "ftp://example.com/x"
        assert errors_of(parse, data) == [
            "hookrun.yaml: triggers[0].notifications[0].url: "
            "must be an http:// or https:// URL with a host"
        ]

    def test_a_file_that_is_not_a_mapping_is_rejected_at_the_root(self) -> None:
        with pytest.raises(ConfigError) as caught:
            parse_config("- a\n- b\n", "hookrun.yaml")
        assert str(caught.value) == (
            "hookrun.yaml: (root): input should be a valid dictionary or instance of HookrunConfig"
        )


class TestYaml:
    def test_syntax_error_names_the_line(self) -> None:
        text = "project:\n  id: p-1\n  slug: [demo\n"
        with pytest.raises(ConfigError) as caught:
            parse_config(text, "broken.yaml")
        [line] = str(caught.value).splitlines()
        assert line.startswith("broken.yaml: line 4, column 1: invalid YAML:")

    def test_duplicate_keys_are_an_error_rather_than_silently_overwritten(self) -> None:
        text = "project: {id: p-1, slug: a, name: A}\nproject: {id: p-2, slug: b, name: B}\n"
        with pytest.raises(ConfigError) as caught:
            parse_config(text, "dup.yaml")
        assert str(caught.value) == (
            "dup.yaml: line 2, column 1: invalid YAML: duplicate key 'project' (first on line 1)"
        )

    def test_an_empty_file_is_an_error(self) -> None:
        with pytest.raises(ConfigError, match=r"^e.yaml: \(root\): the config file is empty$"):
            parse_config("", "e.yaml")

    def test_a_missing_file_is_an_error(self, tmp_path: Path) -> None:
        path = tmp_path / "nope.yaml"
        with pytest.raises(ConfigError, match=r"nope\.yaml: \(file\): cannot read"):
            load_config(path)


class TestEnvSubstitution:
    def test_env_values_and_defaults_are_substituted_at_load(
        self, parse: Parse, data: dict, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("HOOKRUN_TEST_SECRET", "from-env")
        monkeypatch.delenv("HOOKRUN_TEST_PORT", raising=False)
        data["triggers"][0]["conditions"][0]["secret"] = "${env:HOOKRUN_TEST_SECRET}"
        data["triggers"][0]["notifications"][0]["url"] = (
            "http://127.0.0.1:${env:HOOKRUN_TEST_PORT:-8090}/hooks"
        )
        trigger = parse(data).triggers[0]
        assert trigger.conditions[0].secret.get_secret_value() == "from-env"
        assert trigger.notifications[0].url == "http://127.0.0.1:8090/hooks"

    def test_step_env_values_are_left_for_the_runner(self, parse: Parse, data: dict) -> None:
        config = parse(data)
        assert config.steps[0].env == {"API_TOKEN": "${env:EXTRACT_TOKEN}"}

    def test_resolve_env_refs_uses_the_given_environment(self) -> None:
        environ = {"TOKEN": "t0k", "EMPTY": ""}
        assert resolve_env_refs("Bearer ${env:TOKEN}", environ) == "Bearer t0k"
        assert resolve_env_refs("${env:MISSING:-fallback}", environ) == "fallback"
        assert resolve_env_refs("${env:EMPTY:-fallback}", environ) == "fallback"
        assert resolve_env_refs("${env:EMPTY}", environ) == ""
        assert resolve_env_refs("literal $${env:TOKEN}", environ) == "literal ${env:TOKEN}"

    def test_resolve_env_refs_raises_with_the_variable_name(self) -> None:
        with pytest.raises(UnresolvedEnvError) as caught:
            resolve_env_refs("${env:EXTRACT_TOKEN}", {})
        assert caught.value.name == "EXTRACT_TOKEN"


class TestLoadedConfig:
    def test_config_version_is_the_hash_of_the_file_bytes(self, tmp_path: Path) -> None:
        path = tmp_path / "hookrun.yaml"
        path.write_bytes(EXAMPLE.read_bytes())
        config = load_config(path)
        assert config.config_version == hashlib.sha256(path.read_bytes()).hexdigest()[:12]
        assert config.config_dir == str(tmp_path)

    def test_the_recorded_text_is_the_file_with_its_env_references_unresolved(
        self, tmp_path: Path
    ) -> None:
        path = tmp_path / "hookrun.yaml"
        path.write_bytes(EXAMPLE.read_bytes())
        config = load_config(path)
        assert config.source_text == path.read_text()
        assert "${env:" in config.source_text
        again = parse_config(config.source_text, "elsewhere/x.yaml", config_dir=str(tmp_path))
        assert again.config_version == config.config_version
        assert again.config_dir == str(tmp_path)

    def test_the_example_config_loads(self) -> None:
        config = load_config(EXAMPLE)
        trigger = config.trigger("feature-extraction")
        assert trigger is not None
        assert trigger.payload_validator is not None
        assert config.pipeline("Nightly") is not None
        assert config.pipeline("Nightly").topological_order() == ("extract", "train")
        assert config.notifier.allow_private_targets is True
        assert config.config_dir == str(EXAMPLE.parent)

    def test_defaults_fill_in_what_the_file_leaves_out(self, parse: Parse, data: dict) -> None:
        config = parse(data)
        step = config.steps[1]
        assert (step.timeout_s, step.retries) == (3600, 0)
        assert config.triggers[0].enabled is True
        assert config.notifier.retry_schedule_s == (0, 5, 300, 1800, 7200, 18000, 36000, 36000)
        assert (config.notifier.timeout_s, config.notifier.jitter) == (10, 0.2)
        assert config.notifier.allow_private_targets is False
