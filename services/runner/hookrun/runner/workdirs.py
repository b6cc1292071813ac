"""An execution's work directory: prepared before its process starts, read back once it ended."""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson

from hookrun.events.base import utcnow
from hookrun.events.limits import json_too_deep
from hookrun.events.runs import ExecutionFinished, RunStatus
from hookrun.runner.specs import ExecutionSpec

#: How much of the end of stdout and of stderr an ExecutionFinished carries.
TAIL_BYTES = 4096


class Workdirs:
    """The work directories of executions, ``<data_dir>/executions/<execution id>``: prepared
    before the process starts, read back into its ExecutionFinished once it ended."""

    def __init__(self, data_dir: Path, *, max_output_bytes: int, max_json_depth: int) -> None:
        self._root = str(data_dir / "executions")
        self.max_output_bytes = max_output_bytes
        self.max_json_depth = max_json_depth

    def prepare(
        self, spec: ExecutionSpec, extra_env: Mapping[str, str]
    ) -> tuple[str, dict[str, str]]:
        """Create the execution's directory afresh with its inputs and parameters; return the
        directory and the process's environment: the step's, the HOOKRUN_* paths, then
        ``extra_env``."""
        base = f"{self._root}/{spec.execution_id}"
        inputs, outputs = f"{base}/inputs", f"{base}/outputs"
        # A retry or a re-start after a crash gets a fresh directory: nothing half-written stays.
        # (mkdir first and rmtree only when it exists: the common case is one syscall.)
        try:
            os.mkdir(base)
        except FileExistsError:
            shutil.rmtree(base)
            os.mkdir(base)
        except FileNotFoundError:
            os.makedirs(base)
        os.mkdir(f"{base}/work")
        os.mkdir(inputs)
        os.mkdir(outputs)
        for source in spec.input_dirs:
            if source.is_dir():
                for item in source.iterdir():
                    if item.is_file():
                        shutil.copy2(item, f"{inputs}/{item.name}")
        for name, content in spec.inputs.items():
            _write_file(f"{inputs}/{name}", content)
        _write_file(f"{base}/parameters.json", orjson.dumps(spec.params))
        return base, {
            **spec.env,
            "HOOKRUN_RUN_ID": spec.run_id,
            "HOOKRUN_EXECUTION_ID": spec.execution_id,
            "HOOKRUN_TRIGGER_ID": spec.trigger_id,
            "HOOKRUN_PARAMETERS": f"{base}/parameters.json",
            "HOOKRUN_INPUTS": inputs,
            "HOOKRUN_OUTPUTS": outputs,
            "HOOKRUN_OUTPUT": f"{base}/output.json",
            **extra_env,
        }

    def finished(
        self,
        spec: ExecutionSpec,
        status: RunStatus,
        code: int | None,
        *,
        error: str | None,
        started_at: Any = None,
        tails: tuple[str, str] | None = None,
    ) -> ExecutionFinished:
        """The execution's report, with what it left: its output (which fails a successful
        execution when no event could carry it) and, unless given, the tails of its logs."""
        base = f"{self._root}/{spec.execution_id}"
        if tails is None:
            tails = _tail(f"{base}/stdout"), _tail(f"{base}/stderr")
        now = utcnow()
        output = None
        if status is RunStatus.SUCCESS:
            output, problem = self._output(f"{base}/output.json")
            if problem is not None:
                status, error = RunStatus.FAILURE, problem
        return ExecutionFinished(
            run_id=spec.run_id,
            execution_id=spec.execution_id,
            status=status,
            exit_code=code,
            started_at=started_at,
            completed_at=now,
            duration_ms=int((now - started_at).total_seconds() * 1000) if started_at else None,
            output=output,
            stdout_tail=tails[0],
            stderr_tail=tails[1],
            error=error,
        )

    def _output(self, path: str) -> tuple[Any, str | None]:
        """The JSON an execution wrote to HOOKRUN_OUTPUT (None if it wrote none), or why it is
        refused: over HOOKRUN_MAX_OUTPUT_BYTES, not JSON, or nested deeper than
        HOOKRUN_MAX_JSON_DEPTH (no event could carry it)."""
        limit, max_depth = self.max_output_bytes, self.max_json_depth
        try:
            with open(path, "rb") as file:
                raw = file.read(limit + 1)
        except FileNotFoundError:
            return None, None
        except OSError as exc:
            return None, f"HOOKRUN_OUTPUT cannot be read: {exc}"
        if len(raw) > limit:
            size = max(len(raw), os.stat(path).st_size)
            return None, f"HOOKRUN_OUTPUT is {size} bytes, over HOOKRUN_MAX_OUTPUT_BYTES ({limit})"
        try:
            output = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            return None, f"HOOKRUN_OUTPUT is not JSON: {exc}"
        if json_too_deep(raw, max_depth):
            return None, f"HOOKRUN_OUTPUT nests deeper than HOOKRUN_MAX_JSON_DEPTH ({max_depth})"
        return output, None


def open_logs(base: str) -> tuple[int, int]:
    """The process's stdout and stderr, kept open while it lives: the tails are read back
    through the same files."""
    flags = os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
    out = os.open(f"{base}/stdout", flags, 0o666)
    try:
        return out, os.open(f"{base}/stderr", flags, 0o666)
    except OSError:
        os.close(out)
        raise


def _tail(path: str) -> str:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return ""
    try:
        return tail_fd(fd)
    finally:
        os.close(fd)


def tail_fd(fd: int) -> str:
    """The last TAIL_BYTES of an open file, as text."""
    try:
        size = os.fstat(fd).st_size
        if not size:
            return ""
        return os.pread(fd, TAIL_BYTES, max(0, size - TAIL_BYTES)).decode("utf-8", "replace")
    except OSError:
        return ""


def _write_file(path: str, content: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o666)
    try:
        view = memoryview(content)
        while view:  # one write() may write less than it was given
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)
