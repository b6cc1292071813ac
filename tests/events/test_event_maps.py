"""Every event type on a topic a service reads is handled or ignored by it, as the registry says."""

import importlib

import pytest

from hookrun.events import registered
from hookrun.events.maps import EventMap

#: Where each consuming service declares its EventMap (EVENTS).
SERVICES = {
    "gateway": "hookrun.gateway.adapters",
    "runner": "hookrun.runner.handlers",
    "status": "hookrun.status.projection",
    "notifier": "hookrun.notifier.handlers",
}
MAPS: dict[str, EventMap] = {
    name: importlib.import_module(module).EVENTS for name, module in SERVICES.items()
}
TYPES = registered()


@pytest.mark.parametrize("service", MAPS)
class TestEveryConsumingService:
    def test_handles_or_ignores_every_type_on_the_topics_it_reads(self, service):
        assert MAPS[service].unmapped() == []

    def test_handles_and_ignores_nothing_twice_and_nothing_off_its_topics(self, service):
        events = MAPS[service]
        assert events.service == service
        assert not set(events.handlers) & events.ignored
        for cls in [*events.handlers, *events.ignored]:
            assert cls.topic in events.topics, cls.type


@pytest.mark.parametrize("type_", TYPES)
class TestEveryRegisteredType:
    def test_its_consumers_are_the_services_that_handle_it(self, type_):
        cls = TYPES[type_]
        handling = {s for s, m in MAPS.items() if cls.topic in m.topics and m.handles(cls)}
        assert set(cls.consumers) == handling

    def test_has_producers_that_are_services(self, type_):
        producers = TYPES[type_].producers
        assert producers and set(producers) <= set(SERVICES)


def test_a_type_a_service_forgets_fails_the_check():
    from hookrun.events import topics
    from hookrun.events.base import Event
    from hookrun.events.registry import _REGISTRY, register

    @register("hookrun.test.forgotten", version=1, topic=topics.RUNS, producers=("runner",))
    class Forgotten(Event):
        run_id: str

    try:
        assert "hookrun.test.forgotten" in MAPS["notifier"].unmapped()
        assert "hookrun.test.forgotten" in MAPS["runner"].unmapped()
    finally:
        del _REGISTRY["hookrun.test.forgotten"]
