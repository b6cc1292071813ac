"""`make bench`: every benchmark row beside its same-run baseline; a table and bench/results/*.json."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import math
import os
import platform
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from aiokafka.errors import KafkaError  # noqa: E402

from bench import namespaces  # noqa: E402
from bench.warmup import warm_broker  # noqa: E402
from hookrun.dev import kafka  # noqa: E402
from hookrun.events.kafka import delete_topics, topic_names  # noqa: E402

MODULES = ["gateway", "runner", "status", "notifier", "system", "history"]


def _fmt(value: object) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        return f"{value:,.1f}" if value < 1000 else f"{value:,.0f}"
    return str(value)


def table(rows: list[dict[str, object]]) -> str:
    """Render rows as a fixed-width table with the ratio to the baseline."""
    head = ["row", "value", "unit", "baseline", "baseline value", "ratio", "goal", "met"]
    lines = [head]
    for r in rows:
        value, base = r.get("value"), r.get("baseline_value")
        ratio = (
            f"{value / base:.2f}x"
            if isinstance(value, int | float) and isinstance(base, int | float) and base
            else ""
        )
        met = {True: "yes", False: "NO", None: ""}[r.get("ok")]  # type: ignore[index]
        lines.append(
            [
                str(r["name"]),
                _fmt(value),
                str(r.get("unit", "")),
                str(r.get("baseline_name", "")),
                _fmt(base),
                ratio,
                str(r.get("goal", "")),
                met,
            ]
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    out = []
    for n, line in enumerate(lines):
        out.append("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


async def _drop_new_bench_topics(bootstrap: str, before: set[str]) -> None:
    """Delete the topics a benchmark module of this process created (bench/namespaces.py).

    Left behind, they pile up on a reused dev broker (8,000 partitions after a day of runs): its
    heap, GC pauses and every metadata request grow, and so every later benchmark slows.
    """
    new = sorted(t for t in await topic_names(bootstrap) - before if namespaces.ours(t))
    try:
        await delete_topics(bootstrap, new)
    except KafkaError as exc:
        print(f"(could not delete the benchmark's topics: {exc!r})", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--seconds", type=float, default=float(os.environ.get("BENCH_SECONDS", "5"))
    )
    parser.add_argument("--only", action="append", choices=MODULES, help="run only these modules")
    parser.add_argument(
        "--runs",
        type=int,
        help="runs of history the history module writes (default: bench_history.DEFAULT_RUNS)",
    )
    parser.add_argument(
        "--no-broker-warm-up",
        action="store_true",
        help="skip warming the broker's JVM first (bench/warmup.py); for a broker known warm",
    )
    args = parser.parse_args(argv)
    os.chdir(ROOT)
    # Like `make run`: a configured or already running broker is used and left alone; one the
    # benchmark starts itself is stopped, by pid, when it ends.
    with kafka.broker() as bootstrap:
        rows: list[dict[str, object]] = []
        failed = []
        if not args.no_broker_warm_up:
            before = asyncio.run(topic_names(bootstrap))
            try:
                print(asyncio.run(warm_broker(bootstrap)), file=sys.stderr, flush=True)
            finally:
                asyncio.run(_drop_new_bench_topics(bootstrap, before))
        for name in args.only or MODULES:
            try:
                module = importlib.import_module(f"bench.bench_{name}")
            except ModuleNotFoundError:
                print(f"(bench_{name}: not present in this checkout)", file=sys.stderr)
                continue
            print(f"running bench_{name} ...", file=sys.stderr, flush=True)
            before = asyncio.run(topic_names(bootstrap))
            try:
                sized = {"runs": args.runs} if name == "history" and args.runs else {}
                rows += asyncio.run(module.run(bootstrap, args.seconds, **sized))
            except Exception:
                traceback.print_exc()
                failed.append(name)
            finally:
                asyncio.run(_drop_new_bench_topics(bootstrap, before))
    print(table(rows))
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    doc = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "seconds_per_measurement": args.seconds,
        "rows": rows,
        "failed_modules": failed,
    }
    path = out / f"bench-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(doc, indent=2, default=str))
    (out / "latest.json").write_text(json.dumps(doc, indent=2, default=str))
    print(f"\nwritten: {path.relative_to(ROOT)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
