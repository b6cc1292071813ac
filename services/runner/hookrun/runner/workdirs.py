"""An execution's work directory: prepared before its process starts, read back once it ended."""

from __future__ import annotations

import errno
import os
import shutil
import stat
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

    def __init__(
        self,
        data_dir: Path,
        *,
        max_output_bytes: int,
        max_json_depth: int,
        owner: tuple[int, int] | None = None,
    ) -> None:
        self._root = str(data_dir / "executions")
        self.max_output_bytes = max_output_bytes
        self.max_json_depth = max_json_depth
        #: uid, gid of the execution user: it gets the directory, work/ and outputs/ (the
        #: inputs and parameters.json stay the runner's, readable).
        self.owner = owner

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
        if self.owner is not None:
            for path in (base, f"{base}/work", outputs):
                os.chown(path, *self.owner)
        for source in spec.input_dirs:
            _copy_files(str(source), inputs)
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
            # The execution owns its directory: a symlink or a FIFO there must not make the
            # runner read some other file (or block on one).
            fd = _open_regular(path)
        except FileNotFoundError:
            return None, None
        except OSError as exc:
            return None, f"HOOKRUN_OUTPUT cannot be read: {exc}"
        try:
            size = os.fstat(fd).st_size
            if size > limit:
                return (
                    None,
                    f"HOOKRUN_OUTPUT is {size} bytes, over HOOKRUN_MAX_OUTPUT_BYTES ({limit})",
                )
            raw = _read_upto(fd, limit + 1)
        except OSError as exc:
            return None, f"HOOKRUN_OUTPUT cannot be read: {exc}"
        finally:
            os.close(fd)
        if len(raw) > limit:
            return (
                None,
                f"HOOKRUN_OUTPUT is {len(raw)} bytes, over HOOKRUN_MAX_OUTPUT_BYTES ({limit})",
            )
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
        fd = _open_regular(path)
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


def _open_regular(path: str, *, dir_fd: int | None = None) -> int:
    """Open a regular file for reading, never through a symlink, never blocking on a FIFO."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    fd = os.open(path, flags, dir_fd=dir_fd)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(errno.EINVAL, "not a regular file", path)
    return fd


def _read_upto(fd: int, limit: int) -> bytes:
    chunks = []
    left = limit
    while left > 0:
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _copy_files(source: str, target: str) -> None:
    """Copy the regular files of the directory ``source`` (a parent's outputs/) into ``target``.

    The parent execution owned that directory: symlinks (to the runner's files, say) and
    anything but regular files are skipped, and nothing is followed on the way.
    """
    try:
        dir_fd = os.open(source, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return  # no outputs (or not a directory): nothing to pass on
    try:
        for entry in os.scandir(dir_fd):
            if not entry.is_file(follow_symlinks=False):
                continue
            try:
                fd = _open_regular(entry.name, dir_fd=dir_fd)
            except OSError:
                continue
            with open(fd, "rb") as src, open(f"{target}/{entry.name}", "wb") as dst:
                shutil.copyfileobj(src, dst)
    finally:
        os.close(dir_fd)
