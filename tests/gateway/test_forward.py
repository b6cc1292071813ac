"""Run info and the admin API are forwarded to the status service unchanged."""

import asyncio
import logging
from urllib.parse import unquote

import httpx
import pytest
from fastapi.testclient import TestClient

from hookrun.config import parse_config
from hookrun.gateway.adapters import FakeDeliveryIndex, FakeEventLog
from hookrun.gateway.app import build
from hookrun.gateway.config import Settings

from .test_launch import CONFIG


@pytest.fixture
def seen():
    return []


def gateway_for(transport: httpx.AsyncBaseTransport):
    return build(
        Settings(hookrun_max_body_bytes=1024),
        parse_config(CONFIG, "test.yaml"),
        event_log=FakeEventLog(),
        deliveries=FakeDeliveryIndex(),
        status_transport=transport,
    )


def client_for(transport: httpx.AsyncBaseTransport):
    return TestClient(gateway_for(transport))


def test_run_info_post_reaches_the_status_service_with_body_query_and_sender(seen):
    def status(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"status": "pending", "result": []})

    with client_for(httpx.MockTransport(status)) as c:
        r = c.post(
            "/api/v0/launch/gh/run/?x=1",
            content=b'{"run_id": "r-1"}',
            headers={"X-Hub-Signature-256": "sig"},
        )
    assert r.status_code == 200
    assert r.json() == {"status": "pending", "result": []}
    [req] = seen
    assert req.method == "POST"
    assert req.url.path == "/api/v0/launch/gh/run/"
    assert req.url.query == b"x=1"
    assert req.content == b'{"run_id": "r-1"}'
    assert req.headers["x-hub-signature-256"] == "sig"
    assert req.headers["x-forwarded-for"] == "testclient"


def test_admin_answers_pass_through_with_their_status_code(seen):
    def status(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(401, json={"error": "missing bearer token"})

    with client_for(httpx.MockTransport(status)) as c:
        r = c.get("/api/v1/runs?trigger_id=gh")
    assert r.status_code == 401
    assert seen[0].url.path == "/api/v1/runs"


def test_status_service_down_answers_503_with_retry_after():
    def status(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused")

    with client_for(httpx.MockTransport(status)) as c:
        r = c.get("/api/v0/launch/gh/run/?run_id=r-1")
    assert r.status_code == 503
    assert r.headers["retry-after"] == "5"


def test_an_oversized_run_info_body_is_refused_before_forwarding(seen):
    def status(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200)

    with client_for(httpx.MockTransport(status)) as c:
        r = c.post("/api/v0/launch/gh/run/", content=b"x" * 2000)
    assert r.status_code == 413
    assert seen == []


def sent_as(app, raw_path: bytes):
    """``app`` receiving ``raw_path`` as the request target: httpx would resolve its dots first.

    The ASGI scope gets what uvicorn puts there: the raw path, and the path percent-decoded.
    """

    async def asgi(scope, receive, send):
        if scope["type"] == "http":
            scope = {**scope, "raw_path": raw_path, "path": unquote(raw_path.decode("latin-1"))}
        await app(scope, receive, send)

    return asgi


def raw_client_for(transport: httpx.AsyncBaseTransport, raw_path: bytes) -> TestClient:
    return TestClient(sent_as(gateway_for(transport), raw_path))


class TestOnlyNormalisedPathsAreForwarded:
    def status(self, seen):
        def answer(request: httpx.Request) -> httpx.Response:
            seen.append(request)
            return httpx.Response(200, json={"status": "pending", "result": []})

        return httpx.MockTransport(answer)

    @pytest.mark.parametrize(
        "raw_path",
        [
            b"/api/v1/../../openapi.json",
            b"/api/v1/runs/../../../docs",
            b"/api/v1/%2e%2e/%2e%2e/openapi.json",
            b"/api/v1/%2E%2e/%2e%2E/openapi.json",
            b"/api/v1/.%2e/%2e./openapi.json",
            b"/api/v1/./../../openapi.json",
            b"/api/v1/../v0/launch/./run/",
            b"/api/v1/..%2f..%2fopenapi.json",
            b"/api/v1/..%2F..%2Fopenapi.json",
            b"/api%2fv1/runs",
            b"/api/v1/..\\..\\openapi.json",
            b"/api/v1/..%5c..%5copenapi.json",
            b"/api/v1//..//..//openapi.json",
            b"/api/v0/launch/%2e%2e/run/",
            b"/api/v1/..#/../openapi.json",
            b"/ui/../openapi.json",
            b"/ui/%2e%2e/docs",
            b"/ui/..%2fopenapi.json",
            b"/ui/static/%5c..%5c..%5cmetrics",
            b"/uix/runs",
        ],
    )
    @pytest.mark.parametrize("method", ["GET", "POST"])
    def test_a_path_that_leaves_the_forwarded_routes_is_404_and_never_reaches_status(
        self, seen, raw_path, method
    ):
        with raw_client_for(self.status(seen), raw_path) as c:
            r = c.request(method, "/anything", headers={"X-Token": "tok"})
        assert r.status_code == 404
        assert seen == []

    @pytest.mark.parametrize(
        ("raw_path", "forwarded"),
        [
            (b"/api/v1/runs", "/api/v1/runs"),
            (b"/api/v1/runs/r-1/events", "/api/v1/runs/r-1/events"),
            (b"/api/v1/runs/r-1/../r-2", "/api/v1/runs/r-2"),
            (b"/api/v1/runs/r-1/%2e%2e/r-2", "/api/v1/runs/r-2"),
            (b"/api/v0/launch/gh/run/", "/api/v0/launch/gh/run/"),
            (b"/api/v0/launch/gh/run", "/api/v0/launch/gh/run"),
            (b"/api/v0/launch/a%1Fb/run/", "/api/v0/launch/a%1Fb/run/"),
            (b"/api/v0/launch/caf%C3%A9/run/", "/api/v0/launch/caf%C3%A9/run/"),
            (b"/ui", "/ui"),
            (b"/ui/", "/ui/"),
            (b"/ui/runs/r-1", "/ui/runs/r-1"),
            (b"/ui/static/../runs", "/ui/runs"),
            (b"/ui/runs/%2e%2e/triggers", "/ui/triggers"),
        ],
    )
    def test_admin_and_run_info_paths_reach_the_status_service_normalised(
        self, seen, raw_path, forwarded
    ):
        with raw_client_for(self.status(seen), raw_path) as c:
            r = c.get("/anything?run_id=r-1", headers={"X-Token": "tok"})
        assert r.status_code == 200
        [req] = seen
        assert req.url.raw_path == f"{forwarded}?run_id=r-1".encode()
        assert req.headers["x-token"] == "tok"


def test_no_secret_of_a_forwarded_request_reaches_the_log(seen, caplog):
    def status(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"status": "pending", "result": []})

    caplog.set_level(logging.DEBUG)
    with client_for(httpx.MockTransport(status)) as c:
        r = c.get("/api/v0/launch/query/run/?token=qtok-secret&run_id=r-1")
    assert r.status_code == 200 and seen
    assert "qtok-secret" not in caplog.text


def test_dashboard_answers_keep_every_cookie_and_the_gateway_names_the_scheme(seen):
    def status(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(
            303,
            headers=[("location", "/ui/runs"), ("set-cookie", "a=1"), ("set-cookie", "b=2")],
        )

    with client_for(httpx.MockTransport(status)) as c:
        r = c.post(
            "/ui/login",
            content=b"token=t",
            headers={"X-Forwarded-Proto": "https"},
            follow_redirects=False,
        )
    assert r.status_code == 303 and r.headers["location"] == "/ui/runs"
    assert r.headers.get_list("set-cookie") == ["a=1", "b=2"]
    # the client's own claim is dropped: the gateway says how the browser reached it
    assert seen[0].headers.get_list("x-forwarded-proto") == ["http"]


def test_one_browsers_session_cookie_is_never_sent_for_another(seen):
    """The gateway relays Set-Cookie to the browser that signed in and keeps none itself:
    a cookie kept by its client would sign in everyone who comes after."""

    def status(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path == "/ui/login":
            return httpx.Response(
                303,
                headers=[
                    ("location", "/ui/runs"),
                    ("set-cookie", "hookrun_session=admins; HttpOnly; Path=/ui"),
                ],
            )
        return httpx.Response(200, text="ok")

    app = gateway_for(httpx.MockTransport(status))
    with TestClient(app) as admin, TestClient(app) as stranger:
        signed_in = admin.post("/ui/login", content=b"token=t", follow_redirects=False)
        assert signed_in.headers["set-cookie"].startswith("hookrun_session=admins")
        stranger.get("/ui/runs")
        stranger.get("/ui/runs/stream")
        admin.get("/ui/runs")  # the admin's browser sends its own cookie back
    _login, *others = seen
    assert [r.headers.get("cookie") for r in others] == [None, None, "hookrun_session=admins"]


def test_a_live_feed_is_relayed_as_an_event_stream_of_no_fixed_length():
    chunks = [b"retry: 2000\n\n", b'event: run\ndata: {"run_id": "r-1"}\n\n']

    class Feed(httpx.AsyncByteStream):
        async def __aiter__(self):
            for chunk in chunks:
                yield chunk

    def status(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=Feed())

    with client_for(httpx.MockTransport(status)) as c, c.stream("GET", "/ui/runs/stream") as r:
        assert r.headers["content-type"] == "text/event-stream"
        assert "content-length" not in r.headers
        assert b"".join(r.iter_raw()) == b"".join(chunks)


def test_a_relayed_feed_ends_when_the_gateway_shuts_down():
    class Endless(httpx.AsyncByteStream):
        async def __aiter__(self):
            yield b"retry: 2000\n\n"
            await asyncio.Event().wait()  # a feed with nothing more to say, for ever
            yield b""

    def status(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=Endless())

    app = gateway_for(httpx.MockTransport(status))
    app.state.closing = lambda: True
    with TestClient(app) as c:
        r = c.get("/ui/runs/stream")
    assert r.status_code == 200 and r.content == b"retry: 2000\n\n"


def test_live_feeds_are_relayed_on_a_pool_of_their_own(seen):
    """Open dashboards hold their feed's connection: they must not take run info's."""

    def status(request: httpx.Request) -> httpx.Response:
        seen.append(("status", request.url.path))
        return httpx.Response(200, json={"status": "pending", "result": []})

    class Retry(httpx.AsyncByteStream):
        async def __aiter__(self):
            yield b"retry: 2000\n\n"

    def feeds(request: httpx.Request) -> httpx.Response:
        seen.append(("feeds", request.url.path))
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=Retry())

    app = gateway_for(httpx.MockTransport(status))
    with TestClient(app) as c:
        app.state.feed_client = httpx.AsyncClient(
            base_url="http://status", transport=httpx.MockTransport(feeds)
        )
        for path in ("/ui/runs/stream", "/api/v1/runs/stream", "/api/v1/runs", "/ui/runs"):
            assert c.get(path).status_code == 200
    assert seen == [
        ("feeds", "/ui/runs/stream"),
        ("feeds", "/api/v1/runs/stream"),
        ("status", "/api/v1/runs"),
        ("status", "/ui/runs"),
    ]
    # as served (no test transport): the feeds' pool has its own limit
    real = gateway_for(None)
    with TestClient(real):
        pool = real.state.feed_client._transport._pool
        assert pool._max_connections == 64
        assert real.state.status_client._transport._pool._max_connections == 100
