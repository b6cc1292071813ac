"""The process spec of an execution (argv, env, inputs), built from its run's state."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hookrun.config import (
    ParameterError,
    RunExecutionAction,
    UnresolvedEnvError,
    render_command,
    resolve_env_refs,
)
from hookrun.runner.context import Context
from hookrun.runner.state import ExecutionState, RunState

#: Variables of the runner's own environment an execution inherits; the rest (Kafka settings,
#: tokens) stays out, and a step gets further values only through its `env`.
INHERITED_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "USER")


@dataclass(frozen=True)
class ExecutionSpec:
    """Everything the executor needs to run one execution as a process."""

    run_id: str
    execution_id: str
    trigger_id: str
    step: str
    argv: list[str]
    env: dict[str, str]
    params: dict[str, Any]
    #: Input name -> content given at creation (the payload input).
    inputs: dict[str, bytes]
    #: Output directories of the pipeline parents: their files become inputs.
    input_dirs: list[Path]
    timeout_s: float
    partition: int


def execution_spec(
    run: RunState, ex: ExecutionState, ctx: Context, data_dir: Path
) -> ExecutionSpec | str:
    """Build the process spec of ``ex``; a string says why it cannot run (FAILURE)."""
    launched = run.launched
    assert launched is not None
    step = ctx.config.step(ex.created.step)
    if step is None:
        return f"step {ex.created.step!r} is not in the config"
    try:
        argv = render_command(step, ex.created.params, ctx.config.config_dir)
        step_env = {k: resolve_env_refs(v, ctx.environ) for k, v in step.env.items()}
    except (ParameterError, UnresolvedEnvError) as exc:
        return str(exc)
    inputs: dict[str, bytes] = {}
    input_dirs: list[Path] = []
    c = ex.created
    if c.pipeline_id is None:
        trigger = ctx.config.trigger(launched.trigger_id)
        action = trigger.actions[c.action_index] if trigger is not None else None
        if isinstance(action, RunExecutionAction) and action.payload_input is not None:
            inputs[action.payload_input] = launched.request.body()
    else:
        pipe = run.pipelines.get(c.pipeline_id)
        if pipe is not None and c.node is not None:
            created = pipe.created
            for name, b64 in created.inputs_b64.get(c.node, {}).items():
                inputs[name] = base64.b64decode(b64)
            for name in created.payload_inputs.get(c.node, ()):
                if name in inputs:  # a copy's, inline
                    continue
                if created.payload_from is None or created.payload_from.run_id != run.run_id:
                    return f"payload input {name!r} of node {c.node!r} is not in its pipeline"
                inputs[name] = launched.request.body()
            latest = run.latest()
            for parent, child in pipe.created.edges:
                if child == c.node:
                    parent_ex = latest.get((c.action_index, c.pipeline_id, parent))
                    if parent_ex is not None:
                        input_dirs.append(data_dir / "executions" / parent_ex.id / "outputs")
    env = {k: ctx.environ[k] for k in INHERITED_ENV if k in ctx.environ}
    env.update(step_env)
    return ExecutionSpec(
        run_id=run.run_id,
        execution_id=ex.id,
        trigger_id=launched.trigger_id,
        step=step.name,
        argv=argv,
        env=env,
        params=dict(c.params),
        inputs=inputs,
        input_dirs=input_dirs,
        timeout_s=step.timeout_s,
        partition=run.partition,
    )
