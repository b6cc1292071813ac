"""Any payload value a string parameter is filled from, through the runner's start of a run.

Properties: a value that starts with "-" or holds a control character ends the run
INVALID_PAYLOAD, naming the parameter, with nothing created, unless the parameter's pattern
admits it; any other value reaches the execution's argv as exactly one item, unchanged.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any

import orjson
from hypothesis import given

from hookrun.config import parse_config
from hookrun.events.runs import RunStatus
from hookrun.runner.reconcile import reconcile
from hookrun.runner.specs import execution_spec
from tests.fuzz.strategies import fuzz, parameter_values
from tests.runner.test_handlers import ctx, new_run, types

PATTERN = r"-?[\w\t ]*"

CONFIG = f"""
project: {{id: p-1, slug: fuzz, name: Fuzz}}
organization: {{id: o-1, slug: acme, title: Acme}}
environment: {{id: e-1, slug: dev, type: DEVELOPMENT}}
steps:
  - name: plain
    command: ["prog", "{{parameters.target}}"]
    parameters: [{{name: target, type: string}}]
  - name: patterned
    command: ["prog", "{{parameters.target}}"]
    parameters: [{{name: target, type: string, pattern: '{PATTERN}'}}]
triggers:
  - id: whole
    title: the value is the payload's
    actions: [{{action: run_execution, step: plain, parameters: {{target: "{{payload.v}}"}}}}]
  - id: inside
    title: the payload's value after literal text
    actions: [{{action: run_execution, step: plain, parameters: {{target: "x={{payload.v}}"}}}}]
  - id: patterned
    title: a pattern decides
    actions: [{{action: run_execution, step: patterned, parameters: {{target: "{{payload.v}}"}}}}]
"""

_CONFIG = parse_config(CONFIG, "fuzz.yaml")


def _as_text(value: Any, *, inside: bool) -> str:
    """The parameter's text, as the templates and the string type define it."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    return orjson.dumps(value).decode() if inside else str(value)


def _looks_like_an_option(text: str) -> bool:
    return text.startswith("-") or any(unicodedata.category(c) == "Cc" for c in text)


def _start(trigger_id: str, value: Any, tmp_path: Any) -> tuple[list[Any], list[str] | None]:
    run = new_run(trigger_id, {"v": value})
    plan = reconcile(run, ctx(_CONFIG))
    if not plan.start:
        return plan.events, None
    spec = execution_spec(run, plan.start[0], ctx(_CONFIG), tmp_path)
    assert not isinstance(spec, str), spec
    return plan.events, spec.argv


def _refused(events: list[Any], reason: str) -> None:
    assert types(events) == ["RunStarted", "ActionCompleted", "RunFinished"], types(events)
    finished = events[-1]
    assert finished.status is RunStatus.INVALID_PAYLOAD
    assert finished.error.message.startswith(f"parameter target: {reason}"), finished.error


@fuzz(3000)
@given(value=parameter_values)
def test_a_payload_value_like_an_option_never_reaches_argv(tmp_path_factory, value: Any):
    tmp = tmp_path_factory.getbasetemp()
    for trigger_id, inside in (("whole", False), ("inside", True)):
        text = ("x=" if inside else "") + _as_text(value, inside=inside)
        events, argv = _start(trigger_id, value, tmp)
        if _looks_like_an_option(text):
            _refused(events, "the value from the payload ")
        else:
            assert argv == ["prog", text], (trigger_id, argv)


@fuzz(3000)
@given(value=parameter_values)
def test_a_declared_pattern_alone_decides(tmp_path_factory, value: Any):
    text = _as_text(value, inside=False)
    events, argv = _start("patterned", value, tmp_path_factory.getbasetemp())
    if re.fullmatch(PATTERN, text):
        assert argv == ["prog", text]
    else:
        _refused(events, f"{text!r}"[:20])
