"""The Executor port the runner runs executions through, and FakeExecutor for tests."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

from hookrun.events.base import Event
from hookrun.runner.context import Phase
from hookrun.runner.specs import ExecutionSpec

Emit = Callable[[list[Event]], Awaitable[None]]


class Executor(Protocol):
    """Runs executions; reports ExecutionStarted/Heartbeat/Finished through its emit callback."""

    def phase(self, execution_id: str) -> Phase: ...

    def submit(self, spec: ExecutionSpec, *, held: bool = False) -> None: ...

    def release(self, execution_id: str) -> None: ...

    def discard(self, execution_id: str) -> None: ...

    def cancel(self, execution_id: str) -> None: ...

    def backlog(self) -> int: ...

    def running(self) -> int: ...

    async def room(self, limit: int) -> None: ...

    async def drop_partition(self, partition: int) -> None: ...

    async def stop(self) -> None: ...


class FakeExecutor:
    """Records what would run; tests finish executions by hand through ``finish``."""

    def __init__(self, emit: Emit | None = None) -> None:
        self.submitted: dict[str, ExecutionSpec] = {}
        self.canceled: list[str] = []
        self.dropped: list[int] = []
        #: Submitted, but waiting for their ExecutionCreated to be acknowledged.
        self.held: set[str] = set()
        self._emit = emit

    def phase(self, execution_id: str) -> Phase:
        return "running" if execution_id in self.submitted else None

    def submit(self, spec: ExecutionSpec, *, held: bool = False) -> None:
        self.submitted[spec.execution_id] = spec
        if held:
            self.held.add(spec.execution_id)

    def release(self, execution_id: str) -> None:
        self.held.discard(execution_id)

    def discard(self, execution_id: str) -> None:
        self.held.discard(execution_id)
        self.submitted.pop(execution_id, None)

    def cancel(self, execution_id: str) -> None:
        self.canceled.append(execution_id)

    def backlog(self) -> int:
        return 0

    def running(self) -> int:
        return len(self.submitted) - len(self.held)

    async def room(self, limit: int) -> None:
        return None

    async def drop_partition(self, partition: int) -> None:
        self.dropped.append(partition)

    async def stop(self) -> None:
        self.submitted.clear()
