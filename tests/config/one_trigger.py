"""A config file of one trigger around a condition or trigger keys, for the config tests."""

from __future__ import annotations

from hookrun.config import Trigger, parse_config

#: A config up to its list of triggers: one step, `noop`, for their actions.
PREAMBLE = """
project: {id: p-1, slug: demo, name: Demo}
organization: {id: o-1, slug: acme, title: Acme}
environment: {id: e-1, slug: dev, type: DEVELOPMENT}
steps: [{name: noop, command: ["true"]}]
triggers:
"""
HEAD = (
    PREAMBLE
    + """  - id: t
    title: T
    actions: [{action: run_execution, step: noop}]
"""
)


def one_trigger(keys: str, config_dir: str | None = None) -> Trigger:
    """The trigger of a config whose only trigger also has ``keys`` (YAML, indented 4)."""
    text = HEAD + keys
    return parse_config(text, "hookrun.yaml", config_dir=config_dir).triggers[0]


def with_condition(condition: str, config_dir: str | None = None) -> Trigger:
    """The trigger of a config whose only trigger has the one ``condition`` (YAML)."""
    return one_trigger(f"    conditions:\n      - {condition}\n", config_dir)
