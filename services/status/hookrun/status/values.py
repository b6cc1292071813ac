"""Readers of an event's JSON values for the row rules: the value as the event model has it, or refusal.

Each returns its value only if it already is what pydantic would make of it (no coercion, a
time in the store's text form, a text within its bound cut as the model cuts it), and raises
``NotCanonical`` otherwise. The data of a decoded event always passes; a rebuild that meets a
refusal decodes the record instead.
"""

from __future__ import annotations

from collections.abc import Callable, Container
from datetime import datetime
from typing import Any, TypeVar

from hookrun.events import RunStatus
from hookrun.events.limits import MAX_TEXT_CHARS, clip

T = TypeVar("T")
STATUSES = frozenset(s.value for s in RunStatus)
_fromiso = datetime.fromisoformat


class NotCanonical(ValueError):
    """A value not in the form the event model gives it: decode the record and fold that."""


def stored_ts(text: Any) -> str:
    """``projection.ts`` of the datetime pydantic parses from ``text``, for the encoder's forms.

    Those are ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` (also ``ts``'s own) and, for a whole second,
    ``YYYY-MM-DDTHH:MM:SSZ``; any other form raises ``NotCanonical``.
    """
    if type(text) is not str:
        raise NotCanonical
    separators = text[4:20:3]  # at 4, 7, 10, 13, 16 and 19
    if len(text) == 27 and separators == "--T::." and text[26] == "Z":
        _fromiso(text)  # digits, and a date that exists: else ValueError, as pydantic's
        return text
    if len(text) == 20 and separators == "--T::Z":
        _fromiso(text)
        return text[:19] + ".000000Z"
    raise NotCanonical


def opt_stored_ts(text: Any) -> str | None:
    return None if text is None else stored_ts(text)


def _exactly(kind: type[T]) -> Callable[[Any], T]:
    """A reader of a value of exactly ``kind``: pydantic would have coerced any other (a bool
    given for an int, an int given as text)."""

    def read(value: Any) -> T:
        if type(value) is not kind:
            raise NotCanonical
        return value  # type: ignore[no-any-return]

    return read


def _exactly_or_none(kind: type[T]) -> Callable[[Any], T | None]:
    def read(value: Any) -> T | None:
        if value is not None and type(value) is not kind:
            raise NotCanonical
        return value  # type: ignore[no-any-return]

    return read


string = _exactly(str)
integer = _exactly(int)
boolean = _exactly(bool)
json_object = _exactly(dict)
opt_string = _exactly_or_none(str)
opt_integer = _exactly_or_none(int)


def bounded(value: Any) -> str:
    """A bounded text (``limits.BoundedText``), cut as the event model cuts it."""
    if type(value) is not str:
        raise NotCanonical
    return value if len(value) <= MAX_TEXT_CHARS else clip(value)


def opt_bounded(value: Any) -> str | None:
    return None if value is None else bounded(value)


def literal(value: Any, allowed: Container[str]) -> str:
    """One of the strings a ``Literal`` or an enum (such as ``STATUSES``) allows."""
    if type(value) is not str or value not in allowed:
        raise NotCanonical
    return value
