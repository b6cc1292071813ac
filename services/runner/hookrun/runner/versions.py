"""The config version each run was launched with: recorded texts, parsed once, kept in an LRU.

A run is performed with the config its TriggerLaunched names (``config_version``), not with
whatever the runner loaded: services record every version they load on the compacted configs
topic, and a runner reads back the ones it did not load itself.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import replace
from typing import Protocol

from hookrun.config import ConfigError, HookrunConfig, parse_config
from hookrun.events import topics
from hookrun.events.base import Event
from hookrun.events.configs import ConfigRecorded
from hookrun.events.kafka import KafkaUnavailable, TopicTable
from hookrun.events.runs import ErrorDetail
from hookrun.runner.context import Context, Plan
from hookrun.runner.handlers import Handlers
from hookrun.runner.outcomes import forced_finish
from hookrun.runner.state import RunState

log = logging.getLogger("hookrun.runner")

#: Parsed configs of versions other than the runner's own kept at once.
CACHED_VERSIONS = 8


class ConfigStore(Protocol):
    """The config texts services recorded, by version."""

    async def text(self, version: str) -> str | None:
        """The text recorded for ``version``; None if it was never recorded.

        Raises KafkaUnavailable when that cannot be told now.
        """


class KafkaConfigStore:
    """Follows the configs topic, remembering only which versions it holds; a version's text
    is read back from the topic when a run needs it (once while the LRU keeps it parsed), so
    the texts of every version ever loaded stay on Kafka, not in memory."""

    def __init__(self, bootstrap: str, *, namespace: str = topics.NAMESPACE) -> None:
        self._bootstrap = bootstrap
        self._topic = topics.named(topics.CONFIGS, namespace)
        self._known: set[str] = set()
        # An idle table waits long at the broker (docs/decisions/0008).
        self._table = TopicTable(
            bootstrap, "runner", self._topic, self._remember, fetch_max_wait_ms=500
        )

    def _remember(self, event: Event) -> None:
        if isinstance(event, ConfigRecorded):
            self._known.add(event.config_version)

    async def start(self) -> None:
        await self._table.start()

    async def stop(self) -> None:
        await self._table.stop()

    async def text(self, version: str) -> str | None:
        if version not in self._known:
            # Read-your-writes: a version recorded before its launch was appended is found.
            await self._table.catch_up()
            if version not in self._known:
                return None
        found: list[str] = []

        def keep(event: Event) -> None:
            if isinstance(event, ConfigRecorded) and event.config_version == version:
                found.append(event.text)

        reader = TopicTable(self._bootstrap, "runner", self._topic, keep)
        await reader.start()
        try:
            await reader.catch_up()
        finally:
            await reader.stop()
        return found[-1] if found else None


class FakeConfigStore:
    """ConfigStore over a dict (unit tests); ``down`` makes it fail like a dead broker."""

    def __init__(self, texts: dict[str, str] | None = None) -> None:
        self.texts = dict(texts or {})
        self.down = False
        self.reads = 0

    async def text(self, version: str) -> str | None:
        if self.down:
            raise KafkaUnavailable("fake broker is down")
        self.reads += 1
        return self.texts.get(version)


class ConfigVersions:
    """The runner's own config and, parsed on first use and kept in a bounded LRU, the recorded
    versions runs were launched with."""

    def __init__(
        self, own: HookrunConfig, store: ConfigStore, *, size: int = CACHED_VERSIONS
    ) -> None:
        self.own = own
        self._store = store
        self._size = size
        self._cache: OrderedDict[str, HookrunConfig | ErrorDetail] = OrderedDict()
        self._lock = asyncio.Lock()

    def __len__(self) -> int:
        return len(self._cache)

    async def get(self, version: str) -> HookrunConfig | ErrorDetail:
        """The config of ``version``, or why this runner cannot perform it.

        Raises KafkaUnavailable when the recorded versions cannot be read now.
        """
        if version == self.own.config_version:
            return self.own
        found = self._cache.get(version)
        if found is None:
            async with self._lock:  # one read of the topic per version, however many runs
                found = self._cache.get(version)
                if found is None:
                    found = await self._load(version)
                    if found is None:
                        return _unknown(version, self.own.config_version)
                    self._cache[version] = found
                    if len(self._cache) > self._size:
                        self._cache.popitem(last=False)
        if version in self._cache:
            self._cache.move_to_end(version)
        return found

    async def _load(self, version: str) -> HookrunConfig | ErrorDetail | None:
        text = await self._store.text(version)
        if text is None:
            return None
        try:
            # `{config_dir}` is this runner's: the steps' files are read as they are here.
            config = parse_config(text, f"config version {version}", config_dir=self.own.config_dir)
        except ConfigError as exc:
            return ErrorDetail(
                name="InvalidConfigVersion",
                message=f"config version {version!r} cannot be loaded by this runner: {exc}",
            )
        log.info("loaded recorded config version %s for the runs launched with it", version)
        return config


def _unknown(version: str, own: str) -> ErrorDetail:
    # Not cached: a version recorded later is found by the next run that names it.
    return ErrorDetail(
        name="UnknownConfigVersion",
        message=(
            f"config version {version!r} was never recorded on {topics.CONFIGS}: the runner"
            f" (config version {own!r}) performs a run only with the version it was launched with"
        ),
    )


def _ends_with(error: ErrorDetail) -> Handlers:
    def end(run: RunState, ctx: Context) -> Plan:
        if run.launched is None or run.finished is not None:
            return Plan()
        log.error("run %s ends: %s", run.run_id, error.message)
        run.finished = forced_finish(run, error, ctx.now)
        return Plan(events=[run.finished])

    return (end,)


async def configured(
    versions: ConfigVersions, due: Iterable[tuple[RunState, Handlers]]
) -> list[tuple[RunState, Handlers, HookrunConfig]]:
    """Each due run with the config its launch names.

    A run whose version cannot be performed here gets a handler that ends it as FAILURE; one
    whose version cannot be read now (Kafka away) is left out: the sweep's full pass, which
    reconciles every owned run, tries again.
    """
    own = versions.own
    loaded: dict[str, HookrunConfig | ErrorDetail | None] = {}
    out: list[tuple[RunState, Handlers, HookrunConfig]] = []
    for run, handlers in due:
        launched = run.launched
        if (
            launched is None
            or run.finished is not None
            or launched.config_version == own.config_version
        ):
            out.append((run, handlers, own))
            continue
        version = launched.config_version
        if version not in loaded:
            try:
                loaded[version] = await versions.get(version)
            except KafkaUnavailable as exc:
                log.warning("config version %s unreadable now (%s): its runs wait", version, exc)
                loaded[version] = None
        found = loaded[version]
        if isinstance(found, ErrorDetail):
            out.append((run, _ends_with(found), own))
        elif found is not None:
            out.append((run, handlers, found))
    return out


def in_contexts(
    runs: Iterable[tuple[RunState, Handlers, HookrunConfig]], ctx: Context
) -> list[tuple[RunState, Handlers, Context]]:
    """``runs`` with ``ctx`` holding each run's config (one context per config)."""
    contexts = {id(ctx.config): ctx}
    out = []
    for run, handlers, config in runs:
        run_ctx = contexts.get(id(config))
        if run_ctx is None:
            run_ctx = contexts[id(config)] = replace(ctx, config=config)
        out.append((run, handlers, run_ctx))
    return out
