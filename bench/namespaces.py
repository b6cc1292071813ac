"""The namespaces of this benchmark process's topics.

Every namespace a benchmark makes starts with one prefix per process, and `bench/run.py`
deletes only the new topics under it: never those of another benchmark using the same broker.
"""

from __future__ import annotations

import uuid

#: ``bench-<6 hex>``, the same for every module this process runs.
PREFIX = f"bench-{uuid.uuid4().hex[:6]}"


def new(kind: str = "") -> str:
    """A namespace of this process: ``<PREFIX>-<kind><8 hex>``."""
    return f"{PREFIX}-{kind}{uuid.uuid4().hex[:8]}"


def ours(topic: str) -> bool:
    """Whether ``topic`` belongs to a namespace of this process."""
    return topic.startswith(f"{PREFIX}-")
