"""Upgrades old versions of an event's data to the newest shape, one version step at a time."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Data = dict[str, Any]

#: (wire type, from version) -> function returning the data of version + 1.
UPCASTERS: dict[tuple[str, int], Callable[[Data], Data]] = {}


def upcast(type_: str, version: int, newest: int, data: Data) -> Data:
    """Return ``data`` (of ``version``) upgraded to ``newest``.

    Raises KeyError when a step between the two versions has no upcaster.
    """
    while version < newest:
        data = UPCASTERS[(type_, version)](data)
        version += 1
    return data
