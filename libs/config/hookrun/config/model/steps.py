"""Steps (a command with typed parameters and inputs) and pipelines (steps joined by edges)."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, PrivateAttr, ValidationInfo, field_validator

from hookrun.config.model.base import IDENTIFIER, Frozen, NonEmptyStr, check_regex
from hookrun.config.templating import coerce_value, show_value

#: Unicode's control characters (category Cc): C0, DEL and C1. A terminal, a log line or a
#: line-oriented parser reads them as structure, not as data.
CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f-\x9f]")


class Parameter(Frozen):
    name: NonEmptyStr
    type: Literal["integer", "float", "string", "flag"]
    # The constraints come before `default` so that its validator sees them.
    #: A regular expression a string value must match as a whole.
    pattern: str | None = None
    max_length: int | None = Field(default=None, ge=1)
    #: The only values a string parameter takes.
    enum: tuple[str, ...] | None = Field(default=None, min_length=1)
    default: Any = None
    optional: bool = False
    description: str | None = None

    _pattern: re.Pattern[str] | None = PrivateAttr(default=None)

    def _post_init(self) -> None:
        self._pattern = re.compile(self.pattern) if self.pattern is not None else None

    @field_validator("name")
    @classmethod
    def _name_is_identifier(cls, name: str) -> str:
        # The name appears in `{parameters.NAME}` placeholders, so it must be unambiguous there.
        if not IDENTIFIER.fullmatch(name):
            raise ValueError("must be letters, digits and '_', not starting with a digit")
        return name

    @field_validator("pattern")
    @classmethod
    def _pattern_compiles(cls, pattern: str | None, info: ValidationInfo) -> str | None:
        _only_for_strings(pattern, info)
        return check_regex(pattern)

    @field_validator("max_length")
    @classmethod
    def _max_length_for_strings(cls, max_length: int | None, info: ValidationInfo) -> int | None:
        _only_for_strings(max_length, info)
        return max_length

    @field_validator("enum")
    @classmethod
    def _enum_values_are_reachable(
        cls, enum: tuple[str, ...] | None, info: ValidationInfo
    ) -> tuple[str, ...] | None:
        _only_for_strings(enum, info)
        for value in enum or ():
            # A listed value that the other constraints refuse could never be used.
            problem = _string_problem(value, _compiled(info), info.data.get("max_length"), None)
            if problem is not None:
                raise ValueError(f"enum value {problem}")
        return enum

    @field_validator("default")
    @classmethod
    def _default_has_declared_type(cls, default: Any, info: ValidationInfo) -> Any:
        if default is None or "type" not in info.data:
            return default
        # Keep the typed default so consumers never coerce it again.
        typed = coerce_value(info.data["type"], default)
        if isinstance(typed, str):
            problem = _string_problem(
                typed, _compiled(info), info.data.get("max_length"), info.data.get("enum")
            )
            if problem is not None:
                raise ValueError(problem)
        return typed

    @property
    def required(self) -> bool:
        """True when a value must be supplied because there is no default and it is not optional."""
        return self.default is None and not self.optional

    def check_value(self, value: Any, *, from_payload: bool = False) -> None:
        """Raise ValueError with the reason unless the typed ``value`` may be used.

        A string must fit `max_length`, match `pattern` and be one of `enum`, where declared.
        One that came from the payload must not start with "-" (a command would take it for an
        option) nor hold a control character, unless the `pattern` matched it or `enum` lists it.
        """
        if not isinstance(value, str) or self.type != "string":
            return
        problem = _string_problem(value, self._pattern, self.max_length, self.enum)
        if problem is not None:
            raise ValueError(problem)
        if not from_payload or self._pattern is not None or self.enum is not None:
            return
        if value.startswith("-"):
            raise ValueError(
                f"the value from the payload starts with '-' ({show_value(value)}), so a command "
                "could take it for an option (declare a pattern that admits such values)"
            )
        if CONTROL_CHARACTERS.search(value):
            raise ValueError(
                f"the value from the payload holds a control character ({show_value(value)}) "
                "(declare a pattern that admits such values)"
            )


def _only_for_strings(value: object, info: ValidationInfo) -> None:
    kind = info.data.get("type")
    if value is not None and kind is not None and kind != "string":
        raise ValueError(f"only a string parameter takes {info.field_name} (this one is {kind})")


def _compiled(info: ValidationInfo) -> re.Pattern[str] | None:
    # A pattern that failed its own validation is absent from info.data.
    pattern = info.data.get("pattern")
    return re.compile(pattern) if pattern is not None else None


def _string_problem(
    value: str,
    pattern: re.Pattern[str] | None,
    max_length: int | None,
    enum: tuple[str, ...] | None,
) -> str | None:
    """Why ``value`` breaks the declared constraints, or None. The length is checked before the
    pattern, so a long value never reaches the regular expression."""
    if max_length is not None and len(value) > max_length:
        return f"{show_value(value)} is {len(value)} characters long, over max_length {max_length}"
    if pattern is not None and pattern.fullmatch(value) is None:
        return f"{show_value(value)} does not match pattern {pattern.pattern!r}"
    if enum is not None and value not in enum:
        return f"{show_value(value)} is not one of {list(enum)}"
    return None


class Input(Frozen):
    name: NonEmptyStr

    @field_validator("name")
    @classmethod
    def _name_is_a_file_name(cls, name: str) -> str:
        # The input becomes a file of that name in HOOKRUN_INPUTS.
        if name in (".", "..") or "/" in name or "\\" in name or "\0" in name:
            raise ValueError("must be a plain file name")
        return name


class Step(Frozen):
    name: NonEmptyStr
    command: tuple[str, ...] = Field(min_length=1)
    parameters: tuple[Parameter, ...] = ()
    inputs: tuple[Input, ...] = ()
    # Values may hold `${env:NAME}`; they stay unresolved until the runner starts the execution.
    env: dict[str, str] = Field(default_factory=dict)
    timeout_s: float = Field(default=3600.0, gt=0)
    # How often an execution orphaned by a dead runner may be retried before the run is ABORTED.
    retries: int = Field(default=0, ge=0)

    _parameters: dict[str, Parameter] = PrivateAttr(default_factory=dict)
    _inputs: frozenset[str] = PrivateAttr(default=frozenset())

    def _post_init(self) -> None:
        self._parameters = {p.name: p for p in self.parameters}
        self._inputs = frozenset(i.name for i in self.inputs)

    def parameter(self, name: str) -> Parameter | None:
        """The declared parameter of that name, if any."""
        return self._parameters.get(name)

    @property
    def input_names(self) -> frozenset[str]:
        return self._inputs


class Node(Frozen):
    name: NonEmptyStr
    step: NonEmptyStr
    parameters: dict[str, Any] = Field(default_factory=dict)


class Edge(Frozen):
    from_: NonEmptyStr = Field(alias="from")
    to: NonEmptyStr


class Pipeline(Frozen):
    name: NonEmptyStr
    nodes: tuple[Node, ...] = Field(min_length=1)
    edges: tuple[Edge, ...] = ()

    _nodes: dict[str, Node] = PrivateAttr(default_factory=dict)

    def _post_init(self) -> None:
        self._nodes = {n.name: n for n in self.nodes}

    def node(self, name: str) -> Node | None:
        return self._nodes.get(name)

    def upstream(self, name: str) -> tuple[str, ...]:
        """Nodes that must finish before this one starts (their outputs are its inputs)."""
        return tuple(e.from_ for e in self.edges if e.to == name)

    def downstream(self, name: str) -> tuple[str, ...]:
        return tuple(e.to for e in self.edges if e.from_ == name)

    def topological_order(self) -> tuple[str, ...]:
        """Node names so that every edge points forward; ties keep declaration order.

        Raises ValueError if the edges form a cycle (a loaded config never has one).
        """
        order = _topological_order([n.name for n in self.nodes], self.edges)
        if order is None:
            raise ValueError(f"pipeline {self.name!r} has a cycle")
        return order


def _topological_order(names: list[str], edges: tuple[Edge, ...]) -> tuple[str, ...] | None:
    indegree = dict.fromkeys(names, 0)
    for edge in edges:
        indegree[edge.to] += 1
    ready = [n for n in names if indegree[n] == 0]
    order: list[str] = []
    while ready:
        current = ready.pop(0)
        order.append(current)
        for edge in edges:
            if edge.from_ == current:
                indegree[edge.to] -= 1
                if indegree[edge.to] == 0:
                    ready.append(edge.to)
    return tuple(order) if len(order) == len(names) else None


def find_cycle(names: list[str], edges: tuple[Edge, ...]) -> list[str]:
    """A cycle the edges between these node names form, as ["a", "b", "a"]; [] if none."""
    successors: dict[str, list[str]] = {n: [] for n in names}
    for edge in edges:
        successors[edge.from_].append(edge.to)
    state: dict[str, int] = dict.fromkeys(names, 0)  # 0 new, 1 on the stack, 2 done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in successors[node]:
            if state[nxt] == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if state[nxt] == 0 and (cycle := visit(nxt)) is not None:
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for name in names:
        if state[name] == 0 and (cycle := visit(name)) is not None:
            return cycle
    return []
