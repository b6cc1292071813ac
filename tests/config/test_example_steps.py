"""The example steps run as the runner starts them and chain through their files."""

import json
import subprocess
import sys
from pathlib import Path

from hookrun.config import load_config, render_command, resolve_parameters

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "hookrun.yaml"


def run_step(step_name: str, parameters: dict, inputs: dict[str, bytes], workdir: Path) -> dict:
    config = load_config(EXAMPLE)
    step = config.step(step_name)
    assert step is not None
    (workdir / "inputs").mkdir(parents=True)
    (workdir / "outputs").mkdir()
    for name, content in inputs.items():
        (workdir / "inputs" / name).write_bytes(content)
    resolved = resolve_parameters(step, parameters)
    (workdir / "parameters.json").write_text(json.dumps(resolved))
    argv = render_command(step, parameters, config.config_dir)
    argv[0] = sys.executable  # the same interpreter, whatever `python3` is on this machine
    env = {
        "HOOKRUN_PARAMETERS": str(workdir / "parameters.json"),
        "HOOKRUN_INPUTS": str(workdir / "inputs"),
        "HOOKRUN_OUTPUTS": str(workdir / "outputs"),
        "HOOKRUN_OUTPUT": str(workdir / "output.json"),
    }
    done = subprocess.run(argv, env=env, cwd=workdir, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip()
    return json.loads((workdir / "output.json").read_text())


def test_extract_counts_payload_records_and_train_reads_its_features(tmp_path: Path) -> None:
    payload = json.dumps({"batch_size": 2, "records": [{"a": 1}, {"a": 2}, {"a": 3}]}).encode()
    output = run_step(
        "Batch feature extraction", {"batch_size": "2"}, {"payload": payload}, tmp_path / "x"
    )
    assert (output["records"], output["batches"], output["batch_size"]) == (3, 2, 2)
    features = (tmp_path / "x" / "outputs" / "features").read_bytes()
    trained = run_step("Train model", {"epochs": 2}, {"features": features}, tmp_path / "t")
    assert trained["epochs"] == 2
    assert (tmp_path / "t" / "outputs" / "model.json").exists()
