"""Parsing the CLI's own arguments: request bodies, headers and times. Pure functions."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson


class UsageError(ValueError):
    """An argument the user gave cannot be used; the message says which and why."""


def read_data(value: str, option: str = "--data") -> bytes:
    """The bytes of ``--data``: inline JSON, or ``@FILE`` (any content; ``@-`` is stdin).

    Inline text must be JSON, so that a typo is caught here rather than by the run.
    """
    if value.startswith("@"):
        name = value[1:]
        if name == "-":
            import sys

            return sys.stdin.buffer.read()
        try:
            return Path(name).read_bytes()
        except OSError as exc:
            raise UsageError(f"{option}: cannot read {name}: {exc.strerror}") from None
    try:
        orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise UsageError(f"{option}: not JSON ({exc}); use @FILE for other content") from None
    return value.encode()


def parse_header(value: str) -> tuple[str, str]:
    """``'Name: value'`` -> ``("Name", "value")``."""
    name, sep, rest = value.partition(":")
    name = name.strip()
    if not sep or not name or not re.fullmatch(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+", name):
        raise UsageError(f"--header {value!r}: expected 'Name: value'")
    return name, rest.strip()


_RELATIVE = re.compile(r"^(\d+)\s*([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_since(value: str, now: datetime | None = None) -> str:
    """``--since``: a duration back from now (``30s``, ``15m``, ``2h``, ``7d``, ``1w``) or an
    RFC 3339 time; returned as RFC 3339 UTC text with a ``Z``, as the admin API takes it."""
    now = now or datetime.now(UTC)
    match = _RELATIVE.match(value.strip())
    if match:
        moment = now - timedelta(**{_UNITS[match[2]]: int(match[1])})
    else:
        try:
            moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise UsageError(
                f"--since {value!r}: expected a duration such as 15m, 2h, 7d or an RFC 3339 time"
            ) from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
