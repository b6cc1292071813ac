"""Whatever an execution writes to HOOKRUN_OUTPUT, the runner reports it in an event it can append.

Properties: the ExecutionFinished always encodes (never UnrecordableEvent); it is SUCCESS with the
output exactly when the bytes are JSON within HOOKRUN_MAX_OUTPUT_BYTES and HOOKRUN_MAX_JSON_DEPTH,
else FAILURE with an error naming HOOKRUN_OUTPUT.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import orjson
from hypothesis import given
from hypothesis import strategies as st

from hookrun.events import encode
from hookrun.events.runs import RunStatus
from hookrun.runner.specs import ExecutionSpec
from hookrun.runner.workdirs import Workdirs
from tests.fuzz.strategies import _nested, fuzz, json_value

LIMIT = 4096
DEPTH = 16

outputs = st.one_of(
    json_value.map(orjson.dumps),
    st.binary(max_size=200),
    st.integers(min_value=LIMIT - 20, max_value=LIMIT + 20).map(lambda n: b'"' + b"x" * n + b'"'),
    st.builds(
        _nested,
        st.integers(min_value=DEPTH - 2, max_value=300),
        st.sampled_from(["[", "{", "[{"]),
        st.sampled_from([b"1", b"[]", b'"x"']),
    ),
)


def _depth(value: object) -> int:
    """How deep ``value`` nests, counted independently of the code under test."""
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    return 0


def _spec(execution_id: str) -> ExecutionSpec:
    return ExecutionSpec(
        run_id="run-1",
        execution_id=execution_id,
        trigger_id="t",
        step="s",
        argv=["true"],
        env={},
        params={},
        inputs={},
        input_dirs=[],
        timeout_s=10,
        partition=0,
    )


@fuzz(400)
@given(raw=outputs)
def test_any_output_is_reported_in_an_event_that_can_be_appended(tmp_path_factory, raw: bytes):
    workdirs = Workdirs(
        tmp_path_factory.getbasetemp() / "outputs", max_output_bytes=LIMIT, max_json_depth=DEPTH
    )
    spec = _spec(uuid.uuid4().hex)
    base, _ = workdirs.prepare(spec, {})
    Path(base, "output.json").write_bytes(raw)
    finished = workdirs.finished(spec, RunStatus.SUCCESS, 0, error=None, tails=("", ""))
    assert encode(finished).value  # never UnrecordableEvent
    try:
        parsed = orjson.loads(raw)
        acceptable = len(raw) <= LIMIT and _depth(parsed) <= DEPTH
    except orjson.JSONDecodeError:
        acceptable = False
    if acceptable:
        assert (finished.status, finished.output) == (RunStatus.SUCCESS, parsed)
    else:
        assert finished.status is RunStatus.FAILURE and finished.output is None
        assert "HOOKRUN_OUTPUT" in (finished.error or "")
