"""Example step: "train" on the extracted features and write a model file."""

import argparse
import json
import os
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()

    parameters = json.loads(Path(os.environ["HOOKRUN_PARAMETERS"]).read_text())
    features_file = Path(os.environ["HOOKRUN_INPUTS"]) / "features"
    features = json.loads(features_file.read_text()) if features_file.exists() else {"records": 0}
    learning_rate = float(parameters.get("learning_rate", 0.001))

    # A stand-in for training: the "loss" shrinks with epochs and data, deterministically.
    loss = round(1.0 / (1 + args.epochs * learning_rate * 1000 + features.get("records", 0)), 6)
    model = {"epochs": args.epochs, "learning_rate": learning_rate, "loss": loss}
    (Path(os.environ["HOOKRUN_OUTPUTS"]) / "model.json").write_text(json.dumps(model))
    Path(os.environ["HOOKRUN_OUTPUT"]).write_text(json.dumps(model))
    print(f"trained {args.epochs} epochs on {features.get('records', 0)} records: loss={loss}")


if __name__ == "__main__":
    main()
