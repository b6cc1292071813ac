"""Example step: count the records of the launch payload and write them as features."""

import argparse
import json
import os
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()

    parameters = json.loads(Path(os.environ["HOOKRUN_PARAMETERS"]).read_text())
    payload_file = Path(os.environ["HOOKRUN_INPUTS"]) / "payload"
    payload = json.loads(payload_file.read_bytes() or b"null") if payload_file.exists() else None

    # A payload may carry its records in "records", be a list itself, or be one record.
    if isinstance(payload, dict) and isinstance(payload.get("records"), list):
        records = payload["records"]
    elif isinstance(payload, list):
        records = payload
    else:
        records = [] if payload is None else [payload]
    batches = (len(records) + args.batch_size - 1) // args.batch_size

    features = {"records": len(records), "batches": batches, "batch_size": args.batch_size}
    (Path(os.environ["HOOKRUN_OUTPUTS"]) / "features").write_text(json.dumps(features))
    Path(os.environ["HOOKRUN_OUTPUT"]).write_text(
        json.dumps({**features, "parameters": parameters})
    )
    print(f"extracted {len(records)} records in {batches} batches of {args.batch_size}")


if __name__ == "__main__":
    main()
