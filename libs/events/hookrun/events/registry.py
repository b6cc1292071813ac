"""Maps stable wire names to event classes; a duplicate name is an error at import time."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from hookrun.events.base import Event

E = TypeVar("E", bound=type[Event])

_REGISTRY: dict[str, type[Event]] = {}


class DuplicateEventType(Exception):
    """Two classes claimed the same wire name."""


def register(
    type_: str,
    *,
    version: int,
    topic: str,
    producers: tuple[str, ...],
    consumers: tuple[str, ...] = (),
) -> Callable[[E], E]:
    """Register an event class under a stable wire name.

    ``type_`` is the CloudEvents type (``hookrun.run.finished``); ``version`` is the newest
    schema version of its data; ``topic`` is the Kafka topic the event is appended to;
    ``producers`` are the services that append it and ``consumers`` those that act on it (each
    consumer's EventMap handles it; every other service reading the topic ignores it).
    Raises :class:`DuplicateEventType` if the name is taken by another class.
    """

    def decorate(cls: E) -> E:
        existing = _REGISTRY.get(type_)
        if existing is not None and existing is not cls:
            raise DuplicateEventType(f"{type_} is already registered to {existing.__name__}")
        cls.type = type_
        cls.version = version
        cls.topic = topic
        cls.producers = producers
        cls.consumers = consumers
        _REGISTRY[type_] = cls
        return cls

    return decorate


def lookup(type_: str) -> type[Event] | None:
    """Return the class registered under ``type_``, or None for an unknown type."""
    return _REGISTRY.get(type_)


def registered() -> dict[str, type[Event]]:
    """Return a copy of the registry, wire name -> class, in registration order."""
    return dict(_REGISTRY)
