"""Events about one run, in the order they happen in its lifecycle. Key: the run id."""

from __future__ import annotations

import base64
from datetime import datetime
from enum import StrEnum
from typing import Any, ClassVar, Literal
from urllib.parse import parse_qsl

import orjson
from pydantic import BaseModel, ConfigDict

from hookrun.events import topics
from hookrun.events.base import Event
from hookrun.events.limits import BoundedText, OptionalBoundedText
from hookrun.events.registry import register


class RunStatus(StrEnum):
    """How a run (or one action, or one execution) ended: Trigger.dev's RunNotification vocabulary."""

    SUCCESS = "SUCCESS"
    FAILURE = "FAILURE"
    TIMED_OUT = "TIMED_OUT"
    CANCELED = "CANCELED"
    ABORTED = "ABORTED"
    UNRESOLVED_AUTH = "UNRESOLVED_AUTH"
    INVALID_PAYLOAD = "INVALID_PAYLOAD"


ActionType = Literal["run_execution", "run_pipeline", "copy_pipeline"]


def parse_payload(body: bytes, content_type: str | None) -> Any:
    """The payload a run sees of a request body: JSON, a form as a dict, else None."""
    ctype = (content_type or "").split(";")[0].strip().lower()
    if ctype == "application/x-www-form-urlencoded":
        return dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return None


class _Part(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class LaunchRequest(_Part):
    """The HTTP request that launched a run. Secret-bearing headers and query values are redacted."""

    method: str
    path: str
    query: dict[str, str] = {}
    headers: dict[str, str] = {}
    content_type: str | None = None
    remote_addr: str | None = None
    body_b64: str = ""

    def body(self) -> bytes:
        """Return the raw request body."""
        return base64.b64decode(self.body_b64)

    def payload(self) -> Any:
        """Return the body parsed as JSON, or as a form (dict) for form bodies; else None."""
        return parse_payload(self.body(), self.content_type)


class LaunchRef(_Part):
    """Where a run's TriggerLaunched, and so its request body, is on hookrun.runs."""

    run_id: str
    partition: int
    offset: int


class ScheduledLaunch(_Part):
    """The due time of the trigger's schedule that launched a run (no HTTP request did)."""

    due_at: datetime
    cron: str
    timezone: str


@register(
    "hookrun.trigger.launched",
    version=1,
    topic=topics.RUNS,
    producers=("gateway", "status"),
    consumers=("runner", "status"),
)
class TriggerLaunched(Event):
    """A launch passed every condition of its trigger; the run exists from now on."""

    run_id: str
    trigger_id: str
    config_version: str
    request: LaunchRequest
    delivery_id: str | None = None
    is_test: bool = False
    account: str | None = None
    #: Set when the trigger's schedule launched the run; ``request`` is then a stand-in
    #: (method ``SCHEDULE``, a JSON body naming the due time).
    schedule: ScheduledLaunch | None = None
    #: The run this one replays (``POST /api/v1/runs/{id}/replay``); None for every other launch.
    replay_of: str | None = None
    #: What the condition that identified the sender (``account``) knows of it: a JWT's
    #: claims other than ``sub``.
    account_metadata: dict[str, Any] | None = None


@register(
    "hookrun.run.started",
    version=1,
    topic=topics.RUNS,
    producers=("runner",),
    consumers=("runner", "status"),
)
class RunStarted(Event):
    """A runner took the run on: its actions are about to be performed."""

    run_id: str
    trigger_id: str
    runner_id: str
    action_count: int


@register(
    "hookrun.execution.created",
    version=1,
    topic=topics.RUNS,
    producers=("runner",),
    consumers=("runner", "status"),
)
class ExecutionCreated(Event):
    """An execution of a step exists (queued): the run-info result entry appears now."""

    run_id: str
    execution_id: str
    action_index: int
    step: str
    params: dict[str, Any] = {}
    #: Set when the execution is a node of a pipeline.
    pipeline_id: str | None = None
    node: str | None = None
    #: 1 for the first try; a retry after a dead runner gets a new execution with attempt + 1.
    attempt: int = 1


@register(
    "hookrun.execution.started",
    version=1,
    topic=topics.RUNS,
    producers=("runner",),
    consumers=("runner", "status"),
)
class ExecutionStarted(Event):
    """The execution's process was spawned by ``runner_id``, which holds it until ``lease_until``."""

    run_id: str
    execution_id: str
    runner_id: str
    pid: int | None = None
    lease_until: datetime


@register(
    "hookrun.execution.heartbeat",
    version=1,
    topic=topics.RUNS,
    producers=("runner",),
    consumers=("runner", "status"),
)
class ExecutionHeartbeat(Event):
    """The runner running the execution is alive and extends its lease."""

    run_id: str
    execution_id: str
    runner_id: str
    lease_until: datetime


@register(
    "hookrun.execution.finished",
    version=1,
    topic=topics.RUNS,
    producers=("runner",),
    consumers=("runner", "status"),
)
class ExecutionFinished(Event):
    """The execution ended: exited, timed out, was canceled, or was aborted after its runner died."""

    run_id: str
    execution_id: str
    status: RunStatus
    exit_code: int | None = None
    started_at: datetime | None = None
    completed_at: datetime
    duration_ms: int | None = None
    #: JSON the process wrote to HOOKRUN_OUTPUT, if any.
    output: Any = None
    stdout_tail: BoundedText = ""
    stderr_tail: BoundedText = ""
    error: OptionalBoundedText = None


@register(
    "hookrun.pipeline.created",
    version=1,
    topic=topics.RUNS,
    producers=("runner",),
    consumers=("runner", "status"),
)
class PipelineCreated(Event):
    """A pipeline (a DAG of executions) exists: its definition and parameters, enough to copy it."""

    run_id: str
    pipeline_id: str
    pipeline_name: str
    action_index: int
    #: node name -> step name.
    nodes: dict[str, str]
    #: [parent, child] pairs.
    edges: list[tuple[str, str]] = []
    #: node name -> its resolved parameters.
    parameters: dict[str, dict[str, Any]] = {}
    #: node name -> {input name: base64 content} given to the node at creation: a copy's
    #: payload input (a run_pipeline's is in its own launch, see payload_inputs).
    inputs_b64: dict[str, dict[str, str]] = {}
    #: For copy_pipeline: the pipeline this one copies.
    source_pipeline_id: str | None = None
    #: The trigger whose run created it (copy_pipeline copies only its own trigger's pipelines
    #: unless the action allows any); absent in definitions older than the field.
    trigger_id: str | None = None
    #: node name -> names of its inputs whose content is the request body of ``payload_from``.
    payload_inputs: dict[str, list[str]] = {}
    #: The launch holding that body: the pipeline's own run, or the run a copy's source was
    #: first created in. The body is stored there once and referenced, never copied into
    #: definitions.
    payload_from: LaunchRef | None = None


@register(
    "hookrun.pipeline.defined",
    version=1,
    topic=topics.PIPELINES,
    producers=("runner",),
    consumers=("runner",),
)
class PipelineDefined(Event):
    """A copy of PipelineCreated on the compacted pipelines topic, keyed by pipeline id.

    PipelineCreated lives in its run's partition; copy_pipeline may name a pipeline of any run,
    so the runner looks the source up here instead of scanning every partition. The payload
    input is not in it: ``payload_from`` says which launch holds that body.
    """

    key_field: ClassVar[str] = "pipeline_id"

    pipeline_id: str
    run_id: str
    pipeline_name: str
    action_index: int
    nodes: dict[str, str]
    edges: list[tuple[str, str]] = []
    parameters: dict[str, dict[str, Any]] = {}
    inputs_b64: dict[str, dict[str, str]] = {}
    source_pipeline_id: str | None = None
    trigger_id: str | None = None
    payload_inputs: dict[str, list[str]] = {}
    payload_from: LaunchRef | None = None

    @classmethod
    def of(cls, created: PipelineCreated) -> PipelineDefined:
        """Return the definition carried by ``created``, without the content of the inputs
        that ``payload_from`` holds (a copy carries them inline for its own run)."""
        data = created.model_dump(exclude={"event_id", "occurred_at", "source"})
        if created.payload_from is not None:
            inline = {
                node: {
                    name: b64
                    for name, b64 in inputs.items()
                    if name not in created.payload_inputs.get(node, ())
                }
                for node, inputs in created.inputs_b64.items()
            }
            data["inputs_b64"] = {node: inputs for node, inputs in inline.items() if inputs}
        return cls.model_validate(data)


@register(
    "hookrun.pipeline.node_skipped",
    version=1,
    topic=topics.RUNS,
    producers=("runner",),
    consumers=("runner", "status"),
)
class PipelineNodeSkipped(Event):
    """A node did not run because a node it depends on did not succeed."""

    run_id: str
    pipeline_id: str
    node: str
    reason: BoundedText


@register(
    "hookrun.pipeline.finished",
    version=1,
    topic=topics.RUNS,
    producers=("runner",),
    consumers=("runner", "status"),
)
class PipelineFinished(Event):
    """Every node of the pipeline succeeded, failed or was skipped."""

    run_id: str
    pipeline_id: str
    status: RunStatus


@register(
    "hookrun.run.cancel_requested",
    version=1,
    topic=topics.RUNS,
    producers=("status",),
    consumers=("runner", "status"),
)
class RunCancelRequested(Event):
    """Someone asked to cancel the run (admin API); the runner stops its executions."""

    run_id: str
    requested_by: str = "admin"
    reason: BoundedText = ""


@register(
    "hookrun.action.completed",
    version=1,
    topic=topics.RUNS,
    producers=("runner",),
    consumers=("runner", "status"),
)
class ActionCompleted(Event):
    """One action of a run finished (all of its executions or its pipeline are done)."""

    run_id: str
    action_index: int
    action: ActionType
    status: RunStatus
    #: The run-info result entry, e.g. {"action": "run_execution", "execution_step": ...}.
    result: dict[str, Any] | None = None
    error: OptionalBoundedText = None

    @property
    def ok(self) -> bool:
        """True when the action succeeded."""
        return self.status is RunStatus.SUCCESS


class ErrorDetail(_Part):
    """Why a run or an execution failed (Trigger.dev's error shape)."""

    message: BoundedText
    name: str | None = None
    stack_trace: OptionalBoundedText = None


class ExecutionSummary(_Part):
    """One execution as the RunNotification reports it."""

    execution_id: str
    step: str
    status: RunStatus
    action_index: int
    node: str | None = None
    pipeline_id: str | None = None
    exit_code: int | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    duration_ms: int | None = None
    params: dict[str, Any] = {}
    output: Any = None
    error: ErrorDetail | None = None


class Invocation(_Part):
    """What started the run (Trigger.dev's ``invocation``)."""

    id: str
    payload: Any = None
    timestamp: datetime
    context: dict[str, Any] = {}


@register(
    "hookrun.run.finished",
    version=1,
    topic=topics.RUNS,
    producers=("runner",),
    consumers=("runner", "status", "notifier"),
)
class RunFinished(Event):
    """Every execution and pipeline of the run finished; the run's outcome is final."""

    run_id: str
    trigger_id: str
    config_version: str
    status: RunStatus
    started_at: datetime
    completed_at: datetime
    duration_ms: int
    execution_count: int
    invocation: Invocation
    is_test: bool = False
    account: str | None = None
    #: RunNotification's ``account.metadata`` (a JWT's claims other than ``sub``).
    account_metadata: dict[str, Any] | None = None
    #: Outputs of the successful executions (JSON written to HOOKRUN_OUTPUT), by execution id.
    output: Any = None
    error: ErrorDetail | None = None
    executions: list[ExecutionSummary] = []
    #: The execution that failed, if one did (RunNotification's ``task``).
    failed_execution_id: str | None = None

    @property
    def ok(self) -> bool:
        """True when the run succeeded."""
        return self.status is RunStatus.SUCCESS
