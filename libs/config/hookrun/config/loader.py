"""Read, substitute `${env:...}` and validate a config file into a HookrunConfig."""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError
from pydantic_core import ErrorDetails

from hookrun.config.model import ACTION_TYPES, CONDITION_TYPES, HookrunConfig

__all__ = [
    "ConfigError",
    "Problem",
    "UnresolvedEnvError",
    "format_path",
    "load_config",
    "parse_config",
    "resolve_env_refs",
]

# `$${` escapes a literal `${`; `:-` gives a default used when the variable is unset or empty.
_ENV_REF = re.compile(r"\$\$\{|\$\{env:([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_PLAIN_KEY = re.compile(r"[^.\[\]\s\"]+")
_UNION_TAGS = {"conditions": frozenset(CONDITION_TYPES), "actions": frozenset(ACTION_TYPES)}


@dataclass(frozen=True, slots=True)
class Problem:
    path: str
    reason: str


class ConfigError(ValueError):
    """An invalid config file; str() is one `<file>: <path>: <reason>` line per problem."""

    def __init__(self, source: str, problems: list[Problem]) -> None:
        super().__init__(source, problems)
        self.source = source
        self.problems = problems

    def __str__(self) -> str:
        return "\n".join(f"{self.source}: {p.path}: {p.reason}" for p in self.problems)


class UnresolvedEnvError(LookupError):
    """A `${env:NAME}` reference whose variable is unset and has no default."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name

    def __str__(self) -> str:
        return f"environment variable {self.name} is not set"


def resolve_env_refs(value: str, environ: Mapping[str, str]) -> str:
    """Replace `${env:NAME}` / `${env:NAME:-default}` from environ.

    Raises UnresolvedEnvError(name) for an unset (or empty) variable without a default.
    """
    if "${" not in value:
        return value

    def replace(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name is None:
            return "${"
        found = environ.get(name)
        if found:
            return found
        if default is not None:
            return default
        if found is not None:
            return found
        raise UnresolvedEnvError(name)

    return _ENV_REF.sub(replace, value)


def load_config(path: str | os.PathLike[str]) -> HookrunConfig:
    """Load and validate the config file at path; raises ConfigError."""
    source = os.fspath(path)
    try:
        data = Path(source).read_bytes()
    except OSError as exc:
        raise ConfigError(source, [Problem("(file)", f"cannot read: {exc.strerror}")]) from None
    return _parse(data, source)


def parse_config(text: str, source: str, *, config_dir: str | None = None) -> HookrunConfig:
    """Validate config text; source names it in errors and sets `config_dir` unless given.

    Raises ConfigError.
    """
    return _parse(text.encode(), source, config_dir)


def _parse(data: bytes, source: str, config_dir: str | None = None) -> HookrunConfig:
    try:
        text = data.decode()
    except UnicodeDecodeError as exc:
        raise ConfigError(source, [Problem("(file)", f"not UTF-8 (byte {exc.start})")]) from None
    raw = _load_yaml(text, source)
    if raw is None:
        raise ConfigError(source, [Problem("(root)", "the config file is empty")])
    problems: list[Problem] = []
    substituted = _substitute(raw, (), os.environ, problems)
    if problems:
        raise ConfigError(source, problems)
    if config_dir is None:
        config_dir = os.path.dirname(os.path.abspath(source))
    try:
        # Key files named in the config (a JWT condition's) are read relative to its directory.
        config = HookrunConfig.model_validate(substituted, context={"config_dir": config_dir})
    except ValidationError as exc:
        raise ConfigError(source, _problems(exc)) from None
    return config.with_source(hashlib.sha256(data).hexdigest()[:12], config_dir, text)


class _Loader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys, which PyYAML would silently overwrite."""


def _construct_mapping(loader: _Loader, node: yaml.MappingNode, deep: bool = False) -> Any:
    seen: dict[tuple[str, str], int] = {}
    for key_node, _ in node.value:
        if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
            key = (key_node.tag, key_node.value)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"duplicate key {key_node.value!r} (first on line {seen[key]})",
                    key_node.start_mark,
                )
            seen[key] = line
    return loader.construct_mapping(node, deep=deep)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _load_yaml(text: str, source: str) -> Any:
    try:
        return yaml.load(text, Loader=_Loader)  # _Loader is a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "(file)"
        # Only the problem text: str(exc) quotes the offending line, which may hold a secret.
        reason = exc.problem or exc.context or "invalid YAML"
        raise ConfigError(source, [Problem(where, f"invalid YAML: {reason}")]) from None
    except yaml.YAMLError:
        raise ConfigError(source, [Problem("(file)", "invalid YAML")]) from None


def _is_step_env(loc: tuple[str | int, ...]) -> bool:
    return len(loc) == 4 and loc[0] == "steps" and loc[2] == "env"


def _substitute(
    value: Any, loc: tuple[str | int, ...], environ: Mapping[str, str], problems: list[Problem]
) -> Any:
    if isinstance(value, str):
        # Step env values are resolved by the runner when the execution starts.
        if _is_step_env(loc):
            return value
        try:
            return resolve_env_refs(value, environ)
        except UnresolvedEnvError as exc:
            problems.append(Problem(format_path(loc), str(exc)))
            return value
    if isinstance(value, dict):
        return {k: _substitute(v, (*loc, str(k)), environ, problems) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, (*loc, i), environ, problems) for i, v in enumerate(value)]
    return value


def format_path(loc: tuple[str | int, ...]) -> str:
    """`("triggers", 0, "conditions", 1, "header")` -> `triggers[0].conditions[1].header`."""
    parts: list[str] = []
    for segment in loc:
        if isinstance(segment, int):
            parts.append(f"[{segment}]")
        elif _PLAIN_KEY.fullmatch(segment):
            parts.append(f".{segment}" if parts else segment)
        else:
            quoted = segment.replace("\\", "\\\\").replace('"', '\\"')
            parts.append(f'["{quoted}"]')
    return "".join(parts) or "(root)"


def _clean_loc(loc: tuple[str | int, ...]) -> Iterator[str | int]:
    for index, segment in enumerate(loc):
        # Discriminated unions add the tag (`hmac`, `run_execution`) after the list index.
        if (
            index >= 2
            and isinstance(loc[index - 1], int)
            and segment in _UNION_TAGS.get(str(loc[index - 2]), ())
        ):
            continue
        # pydantic marks dict-key errors and validator wrappers with synthetic segments.
        if isinstance(segment, str) and (
            segment == "[key]" or segment.startswith(("function-", "tagged-union["))
        ):
            continue
        yield segment


def _problems(exc: ValidationError) -> list[Problem]:
    errors = exc.errors()
    locs = [e["loc"] for e in errors]
    return [
        _problem(e)
        for e in errors
        # pydantic counts a list's length after dropping invalid items, so a list whose only
        # item is broken is also "too short": that echo would only distract from the real error.
        if not (
            e["type"] == "too_short"
            and any(
                len(other) > len(e["loc"]) and other[: len(e["loc"])] == e["loc"] for other in locs
            )
        )
    ]


def _problem(error: ErrorDetails) -> Problem:
    loc = tuple(_clean_loc(error["loc"]))
    kind = error["type"]
    ctx = error.get("ctx") or {}
    if kind == "missing":
        reason = "field required"
    elif kind == "extra_forbidden":
        reason = "unknown field"
    elif kind == "union_tag_not_found":
        loc = (*loc, str(ctx.get("discriminator", "type")).strip("'"))
        reason = "field required"
    elif kind == "union_tag_invalid":
        loc = (*loc, str(ctx.get("discriminator", "type")).strip("'"))
        reason = f"unknown value {ctx.get('tag')!r} (expected one of {ctx.get('expected_tags')})"
    elif kind == "too_short":
        minimum = ctx.get("min_length", 1)
        reason = "must not be empty" if minimum == 1 else f"must have at least {minimum} items"
    elif kind in ("value_error", "assertion_error"):
        reason = str(ctx["error"]) if "error" in ctx else error["msg"]
    else:
        reason = error["msg"]
    if reason[:1].isupper() and not reason[1:2].isupper():
        reason = reason[0].lower() + reason[1:]
    return Problem(format_path(loc), reason)
