"""What each consuming service does with every event type on the topics it reads."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from hookrun.events.base import Event
from hookrun.events.registry import registered


@dataclass(frozen=True)
class EventMap:
    """A consuming service's table: the types it handles, with what handles each, and the types
    it ignores on purpose. Every registered type on ``topics`` belongs in exactly one of the two,
    so a new type that a service forgets fails a test instead of being dropped unnoticed.
    """

    service: str
    #: Logical topic names (``topics.RUNS``, ...) the service consumes.
    topics: frozenset[str]
    handlers: Mapping[type[Event], Any]
    ignored: frozenset[type[Event]] = field(default_factory=frozenset)

    def unmapped(self) -> list[str]:
        """Registered types on the service's topics that it neither handles nor ignores."""
        return [
            type_
            for type_, cls in registered().items()
            if cls.topic in self.topics and cls not in self.handlers and cls not in self.ignored
        ]

    def handles(self, cls: type[Event]) -> bool:
        """True if ``cls`` is one of the types the service acts on."""
        return cls in self.handlers
