"""Events about config files: each version a service loaded, so any runner can perform it."""

from __future__ import annotations

from typing import ClassVar

from hookrun.events import topics
from hookrun.events.base import Event
from hookrun.events.registry import register


@register(
    "hookrun.config.recorded",
    version=1,
    topic=topics.CONFIGS,
    producers=("gateway", "status", "runner"),
    consumers=("runner",),
)
class ConfigRecorded(Event):
    """A service loaded this config version; a run launched with it is performed with it.

    ``text`` is the config file as written: ``${env:NAME}`` references stay unresolved, and a
    runner resolves them from its own environment when it loads the version. A secret written
    literally in the file is in ``text`` as well.
    """

    key_field: ClassVar[str] = "config_version"

    #: The first 12 hex characters of the sha256 of the file's bytes (TriggerLaunched's).
    config_version: str
    text: str
