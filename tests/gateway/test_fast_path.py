"""The launch fast path (answered before FastAPI) and the cheaper pieces it is built from."""

import asyncio
import gc
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient

from hookrun.config import parse_config
from hookrun.events import TriggerLaunched, encode, new_id
from hookrun.events.kafka import KafkaUnavailable, Publisher
from hookrun.gateway import app as app_module
from hookrun.gateway.adapters import (
    IDLE_FETCH_WAIT_MS,
    FakeDeliveryIndex,
    FakeEventLog,
    KafkaDeliveryIndex,
    KafkaEventLog,
)
from hookrun.gateway.app import build
from hookrun.gateway.config import Settings
from hookrun.gateway.routes import launch_target

from .test_launch import CONFIG


def scope(path: str, method: str = "POST", **extra: object) -> dict[str, object]:
    return {"type": "http", "method": method, "path": path, **extra}


class TestLaunchTarget:
    @pytest.mark.parametrize(
        ("path", "trigger_id"),
        [
            ("/api/v0/launch/gh/", "gh"),
            ("/api/v0/launch/gh", "gh"),
            ("/api/v0/launch/a.b-c_d/", "a.b-c_d"),
        ],
    )
    def test_a_launch_path_names_its_trigger(self, path, trigger_id):
        assert launch_target(scope(path)) == trigger_id

    @pytest.mark.parametrize(
        "path",
        [
            "/api/v0/launch/",
            "/api/v0/launch//",
            "/api/v0/launch/gh/run/",
            "/api/v0/launch/gh/run",
            "/api/v0/launch/gh//",
            "/api/v1/runs",
            "/healthz",
        ],
    )
    def test_other_paths_are_left_to_fastapi(self, path):
        assert launch_target(scope(path)) is None

    def test_other_methods_a_root_path_and_lifespan_are_left_to_fastapi(self):
        assert launch_target(scope("/api/v0/launch/gh/", "GET")) is None
        assert launch_target(scope("/api/v0/launch/gh/", root_path="/gw")) is None
        assert launch_target({"type": "lifespan"}) is None


class ExplodingLog(FakeEventLog):
    async def append(self, events):
        raise RuntimeError("a bug")

    async def append_records(self, records):
        raise RuntimeError("a bug")


def test_an_unexpected_error_answers_500_like_fastapi_would():
    app = build(
        Settings(), parse_config(CONFIG, "t.yaml"), event_log=ExplodingLog(),
        deliveries=FakeDeliveryIndex(),
    )  # fmt: skip
    with TestClient(app, raise_server_exceptions=False) as client:
        r = client.post("/api/v0/launch/query/?token=qtok", content=b"x")
    assert r.status_code == 500


def test_a_launch_takes_the_one_endpoint_with_or_without_a_root_path():
    app = build(
        Settings(), parse_config(CONFIG, "t.yaml"), event_log=FakeEventLog(),
        deliveries=FakeDeliveryIndex(),
    )  # fmt: skip
    endpoint, seen = app.launch_endpoint, []

    async def recording(trigger_id, scope, receive, send):
        seen.append((trigger_id, scope.get("root_path", "")))
        await endpoint(trigger_id, scope, receive, send)

    app.launch_endpoint = recording
    with TestClient(app) as client:
        assert client.post("/api/v0/launch/query/?token=qtok", content=b"x").status_code == 202
    with TestClient(app, root_path="/gw") as client:
        assert client.post("/gw/api/v0/launch/query?token=qtok", content=b"x").status_code == 202
    assert seen == [("query", ""), ("query", "/gw")]


def test_an_unexpected_error_under_a_root_path_answers_500_too():
    app = build(
        Settings(), parse_config(CONFIG, "t.yaml"), event_log=ExplodingLog(),
        deliveries=FakeDeliveryIndex(),
    )  # fmt: skip
    with TestClient(app, root_path="/gw", raise_server_exceptions=False) as client:
        r = client.post("/gw/api/v0/launch/query/?token=qtok", content=b"x")
    assert r.status_code == 500


def test_a_launch_under_a_root_path_is_served_by_the_fastapi_route():
    log = FakeEventLog()
    app = build(
        Settings(), parse_config(CONFIG, "t.yaml"), event_log=log, deliveries=FakeDeliveryIndex()
    )
    with TestClient(app, root_path="/gw") as client:
        r = client.post("/gw/api/v0/launch/query/?token=qtok", content=b"x")
    assert r.status_code == 202
    assert len([e for e in log.events if isinstance(e, TriggerLaunched)]) == 1


def test_new_id_is_a_canonical_uuid7_that_sorts_by_time():
    ids = [new_id() for _ in range(1000)]
    assert len(set(ids)) == 1000
    for text in ids[:50]:
        parsed = uuid.UUID(text)
        assert str(parsed) == text
        assert parsed.version == 7
        assert parsed.variant == uuid.RFC_4122
    at = datetime(2026, 12, 6, 8, 0, tzinfo=UTC)
    earlier, later = new_id(at), new_id(at + timedelta(milliseconds=1))
    assert earlier < later < ids[0]
    assert int(earlier.replace("-", "")[:12], 16) == int(at.timestamp() * 1000)


class FakePublisher:
    """Publisher's send_record and record, with futures the test resolves (or never does)."""

    source = "hookrun/gateway/test"

    def __init__(self):
        self.futures: list[asyncio.Future[object]] = []

    def record(self, event):
        return encode(event, source=self.source)

    async def send_record(self, record):
        future = asyncio.get_running_loop().create_future()
        self.futures.append(future)
        return future


def launched_event() -> TriggerLaunched:
    return TriggerLaunched(
        run_id=new_id(),
        trigger_id="gh",
        config_version="v",
        request={"method": "POST", "path": "/"},
    )


class TestKafkaEventLog:
    def test_append_returns_once_every_event_is_acknowledged(self):
        async def scenario():
            publisher = FakePublisher()
            log = KafkaEventLog(publisher, ack_timeout_s=5)
            append = asyncio.create_task(log.append([launched_event(), launched_event()]))
            await asyncio.sleep(0)
            assert not append.done()
            for future in publisher.futures:
                future.set_result(None)
            await asyncio.wait_for(append, 1)

        asyncio.run(scenario())

    def test_no_acknowledgement_in_time_is_kafka_unavailable(self):
        async def scenario():
            log = KafkaEventLog(FakePublisher(), ack_timeout_s=0.05)
            with pytest.raises(KafkaUnavailable):
                await asyncio.wait_for(log.append([launched_event(), launched_event()]), 2)

        asyncio.run(scenario())

    def test_a_refused_send_is_kafka_unavailable(self):
        from aiokafka.errors import NotEnoughReplicasError

        async def scenario():
            publisher = FakePublisher()
            log = KafkaEventLog(publisher, ack_timeout_s=5)
            append = asyncio.create_task(log.append([launched_event()]))
            await asyncio.sleep(0)
            publisher.futures[0].set_exception(NotEnoughReplicasError())
            with pytest.raises(KafkaUnavailable):
                await append

        asyncio.run(scenario())


def test_publisher_record_is_the_event_stamped_with_the_publisher_as_source():
    publisher = Publisher("127.0.0.1:1", "gateway")
    event = launched_event()
    assert publisher.record(event) == encode(event, source=publisher.source)


def test_the_redelivery_index_polls_an_idle_topic_slowly():
    index = KafkaDeliveryIndex("127.0.0.1:1", window_s=60)
    assert index._table._settings["fetch_max_wait_ms"] == IDLE_FETCH_WAIT_MS


def test_the_server_freezes_its_start_up_heap_and_tests_do_not(monkeypatch):
    frozen = []
    monkeypatch.setattr(app_module.gc, "freeze", lambda: frozen.append(True))
    monkeypatch.setattr(app_module.gc, "collect", lambda *a: 0)
    config = parse_config(CONFIG, "t.yaml")
    for freeze in (False, True):
        app = build(
            Settings(), config, event_log=FakeEventLog(), deliveries=FakeDeliveryIndex(),
            freeze_heap=freeze,
        )  # fmt: skip
        with TestClient(app):
            pass
    assert frozen == [True]
    assert gc.isenabled()


def test_a_fake_event_log_without_a_fake_delivery_index_is_refused():
    # Half fakes would dedupe against a broker at the default address, wherever one runs.
    with pytest.raises(TypeError, match="both event_log and deliveries"):
        build(Settings(), parse_config(CONFIG, "t.yaml"), event_log=FakeEventLog())
