"""Bounds on what an event may carry, so that every event a service builds can be appended."""

from __future__ import annotations

import re
from typing import Annotated

import orjson
from pydantic import AfterValidator

#: Default of HOOKRUN_MAX_JSON_DEPTH: how deep a launch body or an execution's output may nest.
MAX_JSON_DEPTH = 64
#: The highest HOOKRUN_MAX_JSON_DEPTH accepted: a payload travels inside RunFinished a few
#: levels down, and orjson and pydantic refuse to serialise past about 255 levels.
MAX_JSON_DEPTH_CEILING = 200
#: Default of HOOKRUN_MAX_OUTPUT_BYTES: the largest ``output.json`` an execution may write.
MAX_OUTPUT_BYTES = 1024 * 1024
#: Longest error text, reason or response excerpt an event keeps (longer ones are cut).
MAX_TEXT_CHARS = 8192

# A JSON string literal (escapes included); possessive, so a long string is one C-level match.
_STRING = re.compile(rb'"(?:[^"\\]++|\\.)*+"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def json_too_deep(raw: bytes, limit: int) -> bool:
    """True if ``raw`` is JSON whose arrays and objects nest deeper than ``limit`` levels.

    Bytes that are not JSON are never too deep: hookrun treats them as text. The work is a
    parse and at most ``limit`` C-level passes over the brackets, never Python per value.
    """
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return False
    try:
        orjson.loads(raw)
    except orjson.JSONDecodeError:
        return False
    brackets = _STRING.sub(b"", raw).translate(None, _NOT_BRACKETS)
    # Each pass removes exactly the innermost level of every container: "[]" is marked first,
    # so that "{[]}" loses one level in a pass, not two.
    for _ in range(limit):
        if not brackets:
            return False
        brackets = brackets.replace(b"[]", b"<>").replace(b"{}", b"").replace(b"<>", b"")
    return bool(brackets)


def clip(text: str, limit: int = MAX_TEXT_CHARS) -> str:
    """Return ``text`` cut to ``limit`` characters, saying how much was cut."""
    if len(text) <= limit:
        return text
    note = f"... [{len(text) - limit} more characters]"
    return text[: max(0, limit - len(note))] + note


def _clip_optional(text: str | None) -> str | None:
    return None if text is None else clip(text)


#: A free text in an event (an error, a reason, an excerpt): at most MAX_TEXT_CHARS.
BoundedText = Annotated[str, AfterValidator(clip)]
#: The same, where the text may be absent.
OptionalBoundedText = Annotated[str | None, AfterValidator(_clip_optional)]
