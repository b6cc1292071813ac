"""Steps (a command with typed parameters and inputs) and pipelines (steps joined by edges)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, PrivateAttr, ValidationInfo, field_validator

from hookrun.config.model.base import IDENTIFIER, Frozen, NonEmptyStr
from hookrun.config.templating import coerce_value


class Parameter(Frozen):
    name: NonEmptyStr
    type: Literal["integer", "float", "string", "flag"]
    default: Any = None
    optional: bool = False
    description: str | None = None

    @field_validator("name")
    @classmethod
    def _name_is_identifier(cls, name: str) -> str:
        # The name appears in `{parameters.NAME}` placeholders, so it must be unambiguous there.
        if not IDENTIFIER.fullmatch(name):
            raise ValueError("must be letters, digits and '_', not starting with a digit")
        return name

    @field_validator("default")
    @classmethod
    def _default_has_declared_type(cls, default: Any, info: ValidationInfo) -> Any:
        if default is None or "type" not in info.data:
            return default
        # Keep the typed default so consumers never coerce it again.
        return coerce_value(info.data["type"], default)

    @property
    def required(self) -> bool:
        """True when a value must be supplied because there is no default and it is not optional."""
        return self.default is None and not self.optional


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
