"""The config file as a whole (HookrunConfig) and the cross-checks between its parts."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from typing import Annotated, Any, Literal

import orjson
from pydantic import Field, PrivateAttr, ValidationError, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from hookrun.config.model.base import IDENTIFIER, Frozen, Loc, NonEmptyStr
from hookrun.config.model.steps import Pipeline, Step, find_cycle
from hookrun.config.model.triggers import RunExecutionAction, RunPipelineAction, Trigger
from hookrun.config.templating import coerce_value, command_parameter_names, is_template


class Project(Frozen):
    id: NonEmptyStr
    slug: NonEmptyStr
    name: NonEmptyStr


class Organization(Frozen):
    id: NonEmptyStr
    slug: NonEmptyStr
    title: NonEmptyStr


class Environment(Frozen):
    id: NonEmptyStr
    slug: NonEmptyStr
    type: Literal["PRODUCTION", "STAGING", "DEVELOPMENT", "PREVIEW"]


class NotifierConfig(Frozen):
    allow_private_targets: bool = False
    timeout_s: float = Field(default=10.0, gt=0)
    retry_schedule_s: tuple[Annotated[float, Field(ge=0)], ...] = Field(
        default=(0.0, 5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0), min_length=1
    )
    jitter: float = Field(default=0.2, ge=0, le=1)
    #: A subscription whose attempts all failed for this long is disabled (Svix: 5 days).
    disable_after_s: float = Field(default=5 * 86_400.0, gt=0)
    #: ... or once this many of its deliveries in a row were exhausted; None: never for that.
    disable_after_exhausted: int | None = Field(default=None, ge=1)


class HookrunConfig(Frozen):
    project: Project
    organization: Organization
    environment: Environment
    steps: tuple[Step, ...] = ()
    pipelines: tuple[Pipeline, ...] = ()
    triggers: tuple[Trigger, ...] = ()
    notifier: NotifierConfig = Field(default_factory=NotifierConfig)

    _steps: dict[str, Step] = PrivateAttr(default_factory=dict)
    _pipelines: dict[str, Pipeline] = PrivateAttr(default_factory=dict)
    _triggers: dict[str, Trigger] = PrivateAttr(default_factory=dict)
    _config_version: str = PrivateAttr("")
    _config_dir: str = PrivateAttr(".")
    _source_text: str = PrivateAttr("")

    @model_validator(mode="after")
    def _references_resolve(self) -> HookrunConfig:
        problems = list(_check_references(self))
        if problems:
            raise ValidationError.from_exception_data(
                type(self).__name__,
                [
                    InitErrorDetails(
                        type=PydanticCustomError("invalid_reference", "{reason}", {"reason": r}),
                        loc=loc,
                        input=None,
                    )
                    for loc, r in problems
                ],
            )
        return self

    def _post_init(self) -> None:
        self._steps = {s.name: s for s in self.steps}
        self._pipelines = {p.name: p for p in self.pipelines}
        self._triggers = {t.id: t for t in self.triggers}
        # The loader replaces this with the hash of the file bytes; this covers direct construction.
        dumped = orjson.dumps(self.model_dump(mode="json", by_alias=True))
        self._config_version = hashlib.sha256(dumped).hexdigest()[:12]

    @property
    def config_version(self) -> str:
        """First 12 hex chars of the sha256 of the config file's bytes."""
        return self._config_version

    @property
    def source_text(self) -> str:
        """The file as written (`${env:}` references unresolved): what ConfigRecorded records.

        Empty for a config built directly rather than loaded from text.
        """
        return self._source_text

    @property
    def config_dir(self) -> str:
        """Directory of the config file; `{config_dir}` in step commands expands to it."""
        return self._config_dir

    def step(self, name: str) -> Step | None:
        return self._steps.get(name)

    def pipeline(self, name: str) -> Pipeline | None:
        return self._pipelines.get(name)

    def trigger(self, trigger_id: str) -> Trigger | None:
        return self._triggers.get(trigger_id)

    def with_source(self, config_version: str, config_dir: str, text: str = "") -> HookrunConfig:
        """Attach the file-derived version, directory and text (used by the loader)."""
        self._config_version = config_version
        self._config_dir = config_dir
        self._source_text = text
        self._publish_private()
        return self


def _duplicates(names: list[str]) -> Iterator[tuple[int, str]]:
    seen: set[str] = set()
    for index, name in enumerate(names):
        if name in seen:
            yield index, name
        seen.add(name)


def _check_references(config: HookrunConfig) -> Iterator[tuple[Loc, str]]:
    steps = {s.name: s for s in config.steps}
    pipelines = {p.name: p for p in config.pipelines}
    for i, name in _duplicates([s.name for s in config.steps]):
        yield ("steps", i, "name"), f"duplicate step name {name!r}"
    for i, step in enumerate(config.steps):
        yield from _check_step(("steps", i), step)
    for i, name in _duplicates([p.name for p in config.pipelines]):
        yield ("pipelines", i, "name"), f"duplicate pipeline name {name!r}"
    for i, pipeline in enumerate(config.pipelines):
        yield from _check_pipeline(("pipelines", i), pipeline, steps)
    for i, trigger_id in _duplicates([t.id for t in config.triggers]):
        yield ("triggers", i, "id"), f"duplicate trigger id {trigger_id!r}"
    for i, trigger in enumerate(config.triggers):
        for j, action in enumerate(trigger.actions):
            loc: Loc = ("triggers", i, "actions", j)
            if isinstance(action, RunExecutionAction):
                yield from _check_run_execution(loc, action, steps)
            elif isinstance(action, RunPipelineAction):
                yield from _check_run_pipeline(loc, action, pipelines, steps)


def _check_step(loc: Loc, step: Step) -> Iterator[tuple[Loc, str]]:
    for k, name in _duplicates([p.name for p in step.parameters]):
        yield (*loc, "parameters", k, "name"), f"duplicate parameter {name!r}"
    for k, name in _duplicates([i.name for i in step.inputs]):
        yield (*loc, "inputs", k, "name"), f"duplicate input {name!r}"
    for k, item in enumerate(step.command):
        for name in command_parameter_names(item):
            if step.parameter(name) is None:
                yield (*loc, "command", k), f"unknown parameter {name!r}"
    for key in step.env:
        if not IDENTIFIER.fullmatch(key):
            yield (*loc, "env", key), "not a valid environment variable name"


def _check_values(
    loc: Loc, step: Step, values: Mapping[str, Any], owner: str | None
) -> Iterator[tuple[Loc, str]]:
    """Unknown or ill-typed values; with an owner, also required parameters left out."""
    for name, value in values.items():
        param = step.parameter(name)
        if param is None:
            yield (*loc, name), f"step {step.name!r} has no parameter {name!r}"
        elif value is not None and not is_template(value):
            # Templates are resolved per run; literal values can be checked now.
            try:
                param.check_value(coerce_value(param.type, value))
            except ValueError as exc:
                yield (*loc, name), str(exc)
    if owner is not None:
        for param in step.parameters:
            if param.required and param.name not in values:
                yield loc, f"missing required parameter {param.name!r} of {owner}"


def _check_pipeline(
    loc: Loc, pipeline: Pipeline, steps: dict[str, Step]
) -> Iterator[tuple[Loc, str]]:
    names = [n.name for n in pipeline.nodes]
    for k, name in _duplicates(names):
        yield (*loc, "nodes", k, "name"), f"duplicate node name {name!r}"
    for k, node in enumerate(pipeline.nodes):
        step = steps.get(node.step)
        if step is None:
            yield (*loc, "nodes", k, "step"), f"unknown step {node.step!r}"
            continue
        yield from _check_values((*loc, "nodes", k, "parameters"), step, node.parameters, None)
    known = set(names)
    endpoints_ok = True
    for k, edge in enumerate(pipeline.edges):
        for field, alias in (("from_", "from"), ("to", "to")):
            target = getattr(edge, field)
            if target not in known:
                endpoints_ok = False
                yield (*loc, "edges", k, alias), f"unknown node {target!r}"
    if endpoints_ok and len(known) == len(names):
        cycle = find_cycle(names, pipeline.edges)
        if cycle:
            yield (*loc, "edges"), "cycle " + " -> ".join(cycle)


def _check_run_execution(
    loc: Loc, action: RunExecutionAction, steps: dict[str, Step]
) -> Iterator[tuple[Loc, str]]:
    step = steps.get(action.step)
    if step is None:
        yield (*loc, "step"), f"unknown step {action.step!r}"
        return
    yield from _check_values((*loc, "parameters"), step, action.parameters, f"step {step.name!r}")
    if action.payload_input is not None and action.payload_input not in step.input_names:
        yield (
            (*loc, "payload_input"),
            f"step {step.name!r} has no input {action.payload_input!r}",
        )


def _check_run_pipeline(
    loc: Loc,
    action: RunPipelineAction,
    pipelines: dict[str, Pipeline],
    steps: dict[str, Step],
) -> Iterator[tuple[Loc, str]]:
    pipeline = pipelines.get(action.pipeline)
    if pipeline is None:
        yield (*loc, "pipeline"), f"unknown pipeline {action.pipeline!r}"
        return
    for node_name, values in action.parameters.items():
        node = pipeline.node(node_name)
        if node is None:
            yield (
                (*loc, "parameters", node_name),
                f"pipeline {pipeline.name!r} has no node {node_name!r}",
            )
            continue
        step = steps.get(node.step)
        if step is not None:
            # Required parameters may come from the node itself; they are checked below.
            yield from _check_values((*loc, "parameters", node_name), step, values, None)
    for node in pipeline.nodes:
        step = steps.get(node.step)
        if step is None:
            continue
        supplied = set(node.parameters) | set(action.parameters.get(node.name, {}))
        for param in step.parameters:
            if param.required and param.name not in supplied:
                yield (
                    (*loc, "parameters"),
                    f"missing required parameter {param.name!r} of node {node.name!r}",
                )
    if action.payload_input is not None:
        target = action.payload_target(pipeline)
        if target is None:
            yield (
                (*loc, "payload_input"),
                f"must be '<node>.<input>' naming a node of pipeline {pipeline.name!r}",
            )
        else:
            node_name, input_name = target
            node = pipeline.node(node_name)
            step = steps.get(node.step) if node is not None else None
            if step is not None and input_name not in step.input_names:
                yield (
                    (*loc, "payload_input"),
                    f"step {step.name!r} of node {node_name!r} has no input {input_name!r}",
                )
