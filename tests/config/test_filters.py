"""Payload filters: the rules' config errors and what they match."""

import pytest

from hookrun.config import ConfigError, InboundRequest
from hookrun.config.filters import filter_miss
from tests.config.one_trigger import one_trigger


def trigger(rules: str):
    return one_trigger(f"    filter: {rules}\n")


def request(body: bytes = b"{}", **headers: str) -> InboundRequest:
    headers.setdefault("content_type", "application/json")
    return InboundRequest(
        "POST", "/", {k.replace("_", "-"): v for k, v in headers.items()}, body=body
    )


GITHUB = """
      - {path: headers.x-github-event, equals: push}
      - {path: payload.ref, in: [refs/heads/main, refs/heads/release]}
      - {any: [{path: payload.sender.login, matches: "^ci-"}, {not: {path: payload.draft, exists: true}}]}
"""


class TestMatching:
    def test_a_push_to_main_matches_every_rule_of_the_list(self):
        t = trigger(GITHUB)
        body = b'{"ref": "refs/heads/main", "sender": {"login": "alice"}}'
        assert filter_miss(t, request(body, X_GitHub_Event="push")) is None

    def test_header_names_are_case_insensitive_and_the_first_failing_rule_is_named(self):
        t = trigger(GITHUB)
        body = b'{"ref": "refs/heads/main"}'
        assert filter_miss(t, request(body, X_GITHUB_EVENT="push")) is None
        assert filter_miss(t, request(body, X_GitHub_Event="issues")) == (
            "filter[0] did not match: headers.x-github-event equals 'push'"
        )

    def test_a_push_to_another_branch_is_left_out(self):
        t = trigger(GITHUB)
        miss = filter_miss(t, request(b'{"ref": "refs/heads/dev"}', X_GitHub_Event="push"))
        assert miss is not None and miss.startswith("filter[1] did not match: payload.ref in")

    def test_any_and_not_combine(self):
        t = trigger(GITHUB)
        draft = b'{"ref": "refs/heads/main", "draft": false, "sender": {"login": "bob"}}'
        assert filter_miss(t, request(draft, X_GitHub_Event="push")) == (
            "filter[2] did not match: any of 2 rules"
        )
        ci_draft = b'{"ref": "refs/heads/main", "draft": true, "sender": {"login": "ci-bot"}}'
        assert filter_miss(t, request(ci_draft, X_GitHub_Event="push")) is None

    def test_a_single_rule_without_a_list_is_a_list_of_one(self):
        t = trigger("{path: payload.n, equals: 3}")
        assert filter_miss(t, request(b'{"n": 3}')) is None
        assert filter_miss(t, request(b'{"n": 4}')) is not None

    @pytest.mark.parametrize(
        ("body", "matched"),
        [
            (b'{"n": 1}', True),
            (b'{"n": 1.0}', True),
            (b'{"n": true}', False),  # JSON true is not 1
            (b'{"n": "1"}', False),
            (b"{}", False),
        ],
    )
    def test_equals_compares_json_values(self, body, matched):
        t = trigger("[{path: payload.n, equals: 1}]")
        assert (filter_miss(t, request(body)) is None) is matched

    def test_exists_false_matches_a_missing_path_and_null_is_present(self):
        t = trigger("[{path: 'payload.items[1].id', exists: false}]")
        assert filter_miss(t, request(b'{"items": [{"id": 1}]}')) is None
        assert filter_miss(t, request(b'{"items": [{"id": 1}, {"id": null}]}')) is not None

    def test_matches_searches_strings_only(self):
        t = trigger('[{path: payload.v, matches: "^v[0-9]+\\\\."}]')
        assert filter_miss(t, request(b'{"v": "v12.1"}')) is None
        assert filter_miss(t, request(b'{"v": "x v12."}')) is not None
        assert filter_miss(t, request(b'{"v": 12}')) is not None

    def test_a_form_body_is_read_like_a_runs_payload_and_other_bodies_have_no_paths(self):
        t = trigger("[{path: payload.action, equals: opened}]")
        form = request(b"action=opened&x=1", content_type="application/x-www-form-urlencoded")
        assert filter_miss(t, form) is None
        assert filter_miss(t, request(b"action=opened", content_type="text/plain")) is not None
        assert filter_miss(t, request(b"\xff\xfe not json")) is not None


class TestConfigErrors:
    @pytest.mark.parametrize(
        ("rules", "error"),
        [
            (
                '[{path: payload.x, matches: "("}]',
                "triggers[0].filter[0].matches: invalid regular expression: missing ),",
            ),
            (
                "[{any: [{path: payload.x, matches: '[a'}]}]",
                "triggers[0].filter[0].any[0].matches: invalid regular expression",
            ),
            (
                "[{path: body.x, equals: 1}]",
                "triggers[0].filter[0].path: must be 'payload.<path>' or 'headers.<name>'",
            ),
            ("[{path: 'payload.a[x', equals: 1}]", "triggers[0].filter[0].path: malformed path"),
            ("[{path: headers.x-n, equals: 1}]", "triggers[0].filter[0]: a header's value is a"),
            ("[{path: payload.a}]", "triggers[0].filter[0]: give 'path' exactly one of"),
            (
                "[{path: payload.a, equals: 1, exists: true}]",
                "triggers[0].filter[0]: give 'path' exactly one of",
            ),
            ("[{equals: 1}]", "triggers[0].filter[0]: give exactly one of 'path', 'all'"),
            (
                "[{not: {path: payload.a, exists: true}, all: [{path: payload.b, exists: true}]}]",
                "triggers[0].filter[0]: give exactly one of",
            ),
            ("[]", "triggers[0].filter: must not be empty"),
            ("[{all: []}]", "triggers[0].filter[0].all: must not be empty"),
            (
                "[{path: payload.a, equals: 1, nope: 2}]",
                "triggers[0].filter[0].nope: unknown field",
            ),
        ],
    )
    def test_a_bad_rule_is_a_config_error_naming_the_field(self, rules, error):
        with pytest.raises(ConfigError) as exc:
            trigger(rules)
        assert f"hookrun.yaml: {error}" in str(exc.value)
