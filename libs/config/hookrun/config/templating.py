"""Response rendering, payload templates, parameter coercion and command rendering."""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Mapping
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from hookrun.config.model import Parameter, Response, Step

__all__ = [
    "ParameterError",
    "PayloadPathError",
    "coerce_parameter",
    "coerce_value",
    "command_parameter_names",
    "format_parameter",
    "is_template",
    "lookup_path",
    "parse_path",
    "reads_payload",
    "render_command",
    "render_response",
    "resolve_parameters",
    "resolve_template",
    "show_value",
]

RUN_ID_PLACEHOLDER = "{run_id}"
TEXT_CONTENT_TYPE = "text/plain; charset=utf-8"
JSON_CONTENT_TYPE = "application/json"
_DEFAULT_RESPONSE = orjson.dumps({"ok": True})

# One path segment is `.key` or `[index]`; keys exclude the characters that delimit segments.
_SEGMENT = re.compile(r"\.([^.\[\]{}]+)|\[(\d+)\]")
_TEMPLATE = re.compile(r"\{((?:payload|parameters)(?:\.[^.\[\]{}]+|\[\d+\])*)\}")
_COMMAND_PLACEHOLDER = re.compile(r"\{(?:parameters\.([^{}]*)|config_dir)\}")
_INTEGER = re.compile(r"[+-]?\d+")


class PayloadPathError(LookupError):
    """A template or dedupe path names something the payload does not contain."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.path = path

    def __str__(self) -> str:
        return f"payload has no value at {self.path}"


class ParameterError(ValueError):
    """A parameter value cannot be used for the step's declared parameter."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(name, reason)
        self.name = name
        self.reason = reason

    def __str__(self) -> str:
        return f"parameter {self.name}: {self.reason}"


def render_response(response: Response | None, run_id: str) -> tuple[str, bytes]:
    """Return (content type, body) of a launch answer with every `{run_id}` replaced.

    `text` -> text/plain; `json` -> application/json with the placeholder replaced inside every
    string value at any depth (keys are left alone); no response -> `{"ok": true}`.
    """
    if response is None:
        return JSON_CONTENT_TYPE, _DEFAULT_RESPONSE
    if response.text is not None:
        return TEXT_CONTENT_TYPE, response.text.replace(RUN_ID_PLACEHOLDER, run_id).encode()
    return JSON_CONTENT_TYPE, orjson.dumps(_replace_run_id(response.json_, run_id))


def _replace_run_id(value: Any, run_id: str) -> Any:
    if isinstance(value, str):
        return value.replace(RUN_ID_PLACEHOLDER, run_id)
    if isinstance(value, dict):
        return {key: _replace_run_id(item, run_id) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_replace_run_id(item, run_id) for item in value]
    return value


def parse_path(path: str) -> tuple[str | int, ...]:
    """Split `a.b[0].c` into ("a", "b", 0, "c"); raises ValueError on malformed paths."""
    if not path:
        raise ValueError("empty path")
    return _parse_segments(path if path.startswith("[") else "." + path, path)


def _parse_segments(text: str, path: str) -> tuple[str | int, ...]:
    segments: list[str | int] = []
    pos = 0
    while pos < len(text):
        match = _SEGMENT.match(text, pos)
        if match is None:
            raise ValueError(f"malformed path {path!r}")
        key, index = match.groups()
        segments.append(key if key is not None else int(index))
        pos = match.end()
    return tuple(segments)


def lookup_path(data: Any, segments: tuple[str | int, ...], path: str) -> Any:
    """Follow parsed segments into JSON data; raises PayloadPathError(path) when absent."""
    for segment in segments:
        if isinstance(segment, int):
            if not isinstance(data, list) or segment >= len(data):
                raise PayloadPathError(path)
            data = data[segment]
        else:
            if not isinstance(data, dict) or segment not in data:
                raise PayloadPathError(path)
            data = data[segment]
    return data


def is_template(value: Any) -> bool:
    """Whether a parameter value contains a `{payload...}`/`{parameters...}` template."""
    return isinstance(value, str) and _TEMPLATE.search(value) is not None


def resolve_template(value: Any, payload: Any, parameters: Mapping[str, Any] | None = None) -> Any:
    """Resolve `{payload.a.b[0]}` / `{parameters.x}` templates in an action parameter value.

    A string that is exactly one template returns the raw JSON value (type kept); templates
    inside a longer string are stringified (strings as is, other values as JSON). Non-string
    values pass through. Raises PayloadPathError(path) when a path is missing.
    """
    if not isinstance(value, str) or "{" not in value:
        return value
    whole = _TEMPLATE.fullmatch(value)
    if whole is not None:
        return _lookup_template(whole.group(1), payload, parameters)
    return _TEMPLATE.sub(
        lambda m: _stringify(_lookup_template(m.group(1), payload, parameters)), value
    )


def _lookup_template(path: str, payload: Any, parameters: Mapping[str, Any] | None) -> Any:
    # The template regex guarantees the root and well-formed segments after it.
    if path.startswith("payload"):
        data, rest = payload, path[len("payload") :]
    else:
        if parameters is None:
            raise PayloadPathError(path)
        data, rest = parameters, path[len("parameters") :]
    return lookup_path(data, _parse_segments(rest, path), path)


def _stringify(value: Any) -> str:
    if isinstance(value, str):
        return value
    return orjson.dumps(value).decode()


def coerce_value(type_name: str, value: Any) -> Any:
    """Convert a value to a declared parameter type; raises ValueError with the reason."""
    if type_name == "integer":
        if isinstance(value, bool):
            raise ValueError(f"expected an integer, got {show_value(value)}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str) and _INTEGER.fullmatch(value.strip()):
            return int(value.strip())
        raise ValueError(f"expected an integer, got {show_value(value)}")
    if type_name == "float":
        if isinstance(value, int | float) and not isinstance(value, bool):
            result = float(value)
        elif isinstance(value, str):
            try:
                result = float(value.strip())
            except ValueError:
                raise ValueError(f"expected a number, got {show_value(value)}") from None
        else:
            raise ValueError(f"expected a number, got {show_value(value)}")
        if not math.isfinite(result):
            raise ValueError(f"expected a finite number, got {show_value(value)}")
        return result
    if type_name == "string":
        if isinstance(value, str):
            return value
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, int | float):
            return str(value)
        raise ValueError(f"expected a string, got {show_value(value)}")
    if type_name == "flag":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        raise ValueError(f"expected true or false, got {show_value(value)}")
    raise ValueError(f"unknown parameter type {type_name!r}")


def show_value(value: Any) -> str:
    """A glimpse of a value for an error message: a string's repr (control characters escaped),
    anything else as JSON, cut at 60 characters."""
    text = repr(value) if isinstance(value, str) else _stringify(value)
    # Values come from payloads and can be large; the message only needs a glimpse.
    return text if len(text) <= 60 else text[:57] + "..."


def coerce_parameter(param: Parameter, value: Any, *, from_payload: bool = False) -> Any:
    """Convert a value to the parameter's declared type; raises ParameterError(name, reason).

    None is accepted only for optional parameters. Flags accept booleans and the strings
    "true"/"false"; integers accept "32" and 32.0 but not "3.5". The typed value must then pass
    the parameter's constraints (`Parameter.check_value`), stricter for a value ``from_payload``.
    """
    if value is None:
        if param.optional:
            return None
        raise ParameterError(param.name, "a value is required")
    try:
        typed = coerce_value(param.type, value)
        param.check_value(typed, from_payload=from_payload)
    except ValueError as exc:
        raise ParameterError(param.name, str(exc)) from None
    return typed


def resolve_parameters(
    step: Step, values: Mapping[str, Any], *, from_payload: Collection[str] = ()
) -> dict[str, Any]:
    """Merge supplied values with the step's defaults and coerce them.

    Returns name -> typed value for every parameter that has a value; optional parameters
    without one are left out. Raises ParameterError for undeclared names, bad values, and
    required parameters without a value. The values of the names in ``from_payload`` came from
    the payload (see :func:`reads_payload`) and are checked as such.
    """
    for name in values:
        if step.parameter(name) is None:
            raise ParameterError(name, f"step {step.name!r} declares no such parameter")
    resolved: dict[str, Any] = {}
    for param in step.parameters:
        value = values.get(param.name, param.default)
        if value is None and param.optional:
            continue
        resolved[param.name] = coerce_parameter(
            param, value, from_payload=param.name in from_payload
        )
    return resolved


def reads_payload(value: Any) -> bool:
    """Whether a parameter value holds a `{payload...}` template: its value comes from the
    payload, whatever literal text surrounds the template."""
    return isinstance(value, str) and any(
        match.group(1).startswith("payload") for match in _TEMPLATE.finditer(value)
    )


def format_parameter(value: Any) -> str:
    """Render a typed parameter value as one argv item (flags as "true"/"false")."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def render_command(step: Step, parameters: Mapping[str, Any], config_dir: str) -> list[str]:
    """Return the step's argv with `{parameters.NAME}` and `{config_dir}` replaced.

    Values are resolved with `resolve_parameters` (defaults, coercion). A flag renders as
    "true"/"false". An argv item that mentions an optional parameter without a value is
    dropped, so write optional options as one item (`--limit={parameters.limit}`).
    Raises ParameterError like `resolve_parameters`.
    """
    resolved = resolve_parameters(step, parameters)
    argv: list[str] = []
    for item in step.command:
        if "{" not in item:
            argv.append(item)
            continue
        dropped = False

        def replace(match: re.Match[str]) -> str:
            nonlocal dropped
            name = match.group(1)
            if name is None:
                return config_dir
            if name not in resolved:
                if step.parameter(name) is None:
                    raise ParameterError(name, f"step {step.name!r} declares no such parameter")
                dropped = True
                return ""
            return format_parameter(resolved[name])

        rendered = _COMMAND_PLACEHOLDER.sub(replace, item)
        if not dropped:
            argv.append(rendered)
    return argv


def command_parameter_names(item: str) -> list[str]:
    """Names of the `{parameters.NAME}` placeholders in one argv item."""
    return [m.group(1) for m in _COMMAND_PLACEHOLDER.finditer(item) if m.group(1) is not None]
