"""``hookrun-topics create|check``: make hookrun's topics, or report every unsafe setting they have.

The broker comes from ``KAFKA_BOOTSTRAP_SERVERS`` (and ``KAFKA_*`` security), the layout from
``HOOKRUN_TOPIC_REPLICATION_FACTOR`` and ``HOOKRUN_TOPIC_PARTITIONS``. ``check`` exits 1 when a
topic is missing or unsafe, ``create`` creates the missing ones first.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from hookrun.events import topics
from hookrun.events.admin import ensure_topics, unsafe_topics


async def _run(command: str, bootstrap: str, namespace: str) -> int:
    layout = topics.Layout.from_env()
    if command == "create":
        created = await ensure_topics(bootstrap, namespace=namespace, layout=layout)
        for name in created:
            print(f"created {name}")
    problems = await unsafe_topics(bootstrap, namespace=namespace, layout=layout)
    for problem in problems:
        print(problem)
    if not problems:
        print(f"every topic of namespace {namespace!r} is there and safe")
    return 1 if problems else 0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="hookrun-topics", description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["create", "check"])
    parser.add_argument(
        "--namespace", default=os.environ.get("HOOKRUN_NAMESPACE", topics.NAMESPACE)
    )
    args = parser.parse_args(argv)
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    try:
        code = asyncio.run(_run(args.command, bootstrap, args.namespace))
    except ValueError as exc:  # a HOOKRUN_TOPIC_* setting
        print(f"hookrun-topics: {exc}", file=sys.stderr)
        code = 2
    sys.exit(code)


if __name__ == "__main__":
    main()
