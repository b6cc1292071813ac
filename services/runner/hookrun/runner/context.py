"""What reconciling a run is given (Context) and what it returns (Plan)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, Protocol

from hookrun.config import HookrunConfig
from hookrun.events.base import Event
from hookrun.events.runs import PipelineDefined
from hookrun.runner.state import ExecutionState

#: Whether this process holds an execution: waiting for a slot, or its process is running.
Phase = Literal["queued", "running"] | None


class SourceLoading(Exception):
    """A pipeline's payload input is being read from the launch that holds it: the lookup is
    answered once it is there (the index then reconciles the waiting runs again)."""


class SourceUnavailable(Exception):
    """A pipeline's payload input cannot be had: its launch is no longer on the runs topic."""


class PipelineLookup(Protocol):
    def __call__(self, pipeline_id: str, *, with_payload: bool = True) -> PipelineDefined | None:
        """The definition by id, None if unknown. ``with_payload``: its payload input filled
        into ``inputs_b64`` (raises SourceLoading while it is read, SourceUnavailable if it
        cannot be); without it: the definition as stored, which never waits."""
        ...


def _no_pipelines(pipeline_id: str, *, with_payload: bool = True) -> PipelineDefined | None:
    return None


@dataclass
class Context:
    """What reconciling needs besides the run: config, clock, identity and lookups."""

    config: HookrunConfig
    runner_id: str
    now: datetime
    environ: Mapping[str, str]
    #: Phase of an execution in this process (None: not here).
    phase: Callable[[str], Phase] = lambda _id: None
    #: A pipeline definition by id (copy_pipeline), or None if unknown.
    lookup_pipeline: PipelineLookup = _no_pipelines
    #: This host's monotonic clock, which leases are judged by (``now`` is wall time).
    monotonic: Callable[[], float] = time.monotonic


@dataclass
class Plan:
    """The result of reconciling: events to append, then executions to start and to stop."""

    events: list[Event] = field(default_factory=list)
    start: list[ExecutionState] = field(default_factory=list)
    cancel: list[str] = field(default_factory=list)

    def add(self, other: Plan) -> None:
        """Take in what another handler planned for the same run, after what this plan holds."""
        self.events += other.events
        self.start += other.start
        self.cancel += other.cancel
