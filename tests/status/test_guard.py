"""Wrong admin tokens are throttled per client address, on the admin API and the sign-in."""

from __future__ import annotations

import logging
import re

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY
from pydantic import ValidationError

from hookrun.gateway.adapters import FakeEventLog
from hookrun.status.adapters import FakeLogEnds
from hookrun.status.app import build, warn_of_a_short_token
from hookrun.status.config import Settings
from hookrun.status.guard import AuthThrottle
from tests.gateway.test_forward import gateway_for
from tests.status.test_routes import TOKEN, app  # noqa: F401 (fixture)

ATTACKER = "203.0.113.9"
OPERATOR = "198.51.100.7"
GATEWAY = "127.0.0.1"
WRONG = {"Authorization": "Bearer guess"}
RIGHT = {"Authorization": f"Bearer {TOKEN}"}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def from_(app, host: str) -> TestClient:  # noqa: F811
    """A client whose requests reach the status service from ``host``."""
    return TestClient(app, client=(host, 50000))


def failures(kind: str, throttled: str) -> float:
    labels = {"kind": kind, "throttled": throttled}
    return REGISTRY.get_sample_value("hookrun_admin_auth_failures_total", labels) or 0.0


@pytest.fixture
def clock(app) -> Clock:  # noqa: F811
    clock = Clock()
    app.state.auth_throttle = AuthThrottle(10, 60.0, clock=clock)
    return clock


class TestAdminApi:
    def test_the_eleventh_attempt_gets_429_with_retry_after_and_no_comparison(self, app, clock):  # noqa: F811
        attacker = from_(app, ATTACKER)
        for _ in range(10):
            assert attacker.get("/api/v1/runs", headers=WRONG).status_code == 401
        clock.now += 15
        # past the limit even the right token is refused: it is not compared
        r = attacker.get("/api/v1/runs", headers=RIGHT)
        assert r.status_code == 429
        assert r.headers["retry-after"] == "45"
        assert r.json() == {
            "error": f"too many wrong admin tokens from {ATTACKER}; retry after 45 s"
        }

    def test_a_right_token_from_another_address_is_never_affected(self, app, clock):  # noqa: F811
        attacker = from_(app, ATTACKER)
        for _ in range(30):
            attacker.get("/api/v1/runs", headers=WRONG)
        assert attacker.get("/api/v1/runs", headers=WRONG).status_code == 429
        assert from_(app, OPERATOR).get("/api/v1/runs", headers=RIGHT).status_code == 200

    def test_the_address_may_try_again_when_the_window_ends(self, app, clock):  # noqa: F811
        attacker = from_(app, ATTACKER)
        for _ in range(10):
            attacker.get("/api/v1/runs", headers=WRONG)
        clock.now += 59
        # refused attempts do not lengthen the window
        assert attacker.get("/api/v1/runs", headers=WRONG).headers["retry-after"] == "1"
        clock.now += 1
        assert attacker.get("/api/v1/runs", headers=RIGHT).status_code == 200

    def test_fewer_than_the_limit_and_no_token_at_all_are_not_throttled(self, app, clock):  # noqa: F811
        client = from_(app, ATTACKER)
        for _ in range(9):
            client.get("/api/v1/runs", headers=WRONG)
        for _ in range(20):
            assert client.get("/api/v1/runs").status_code == 401  # no guess made
        assert client.get("/api/v1/runs", headers=RIGHT).status_code == 200

    def test_one_ipv6_slash_64_is_one_address(self, app, clock):  # noqa: F811
        for i in range(10):
            from_(app, f"2001:db8:1:2::{i + 1:x}").get("/api/v1/runs", headers=WRONG)
        assert from_(app, "2001:db8:1:2:ffff::1").get("/api/v1/runs").status_code == 429
        assert from_(app, "2001:db8:1:3::1").get("/api/v1/runs", headers=RIGHT).status_code == 200

    def test_failures_and_refusals_are_counted_by_kind(self, app, clock):  # noqa: F811
        before = failures("api", "false"), failures("api", "true")
        attacker = from_(app, ATTACKER)
        for _ in range(12):
            attacker.get("/api/v1/runs", headers=WRONG)
        assert failures("api", "false") - before[0] == 10
        assert failures("api", "true") - before[1] == 2

    def test_a_warning_names_the_address_once_per_window_not_per_attempt(
        self,
        app,  # noqa: F811
        clock,
        caplog,
    ):
        caplog.set_level(logging.WARNING, "hookrun.status.guard")
        attacker = from_(app, ATTACKER)
        for _ in range(25):
            attacker.get("/api/v1/runs", headers=WRONG)
        lines = [r.getMessage() for r in caplog.records if ATTACKER in r.getMessage()]
        # its first wrong token, and the one that reached the limit
        assert len(lines) == 2, lines
        assert "get 429 for 60 s" in lines[1]
        clock.now += 60
        attacker.get("/api/v1/runs", headers=WRONG)
        assert sum(ATTACKER in r.getMessage() for r in caplog.records) == 3


class TestBehindTheGateway:
    """The gateway replaces X-Forwarded-For with its peer's address; status believes it only
    from a peer in FORWARDED_ALLOW_IPS (loopback by default)."""

    def test_the_forwarded_address_is_throttled_not_the_gateways(self, app, clock):  # noqa: F811
        gateway = from_(app, GATEWAY)
        for _ in range(10):
            gateway.get("/api/v1/runs", headers={**WRONG, "X-Forwarded-For": ATTACKER})
        r = gateway.get("/api/v1/runs", headers={**RIGHT, "X-Forwarded-For": ATTACKER})
        assert r.status_code == 429
        r = gateway.get("/api/v1/runs", headers={**RIGHT, "X-Forwarded-For": OPERATOR})
        assert r.status_code == 200

    def test_x_forwarded_for_from_an_untrusted_peer_is_ignored(self, app, clock):  # noqa: F811
        attacker = from_(app, ATTACKER)
        for i in range(10):
            # a new made-up address each time does not buy more guesses
            attacker.get("/api/v1/runs", headers={**WRONG, "X-Forwarded-For": f"192.0.2.{i}"})
        r = attacker.get("/api/v1/runs", headers={**RIGHT, "X-Forwarded-For": "192.0.2.99"})
        assert r.status_code == 429
        assert ATTACKER in r.json()["error"]

    def test_the_trusted_proxies_are_a_setting(self, config, store):
        settings = Settings(hookrun_admin_token=TOKEN, forwarded_allow_ips="10.1.0.0/16")
        application = build(
            settings, config, store=store, event_log=FakeEventLog(), ends=FakeLogEnds()
        )
        proxy = from_(application, "10.1.2.3")
        for _ in range(10):
            proxy.get("/api/v1/runs", headers={**WRONG, "X-Forwarded-For": ATTACKER})
        r = proxy.get("/api/v1/runs", headers={**RIGHT, "X-Forwarded-For": OPERATOR})
        assert r.status_code == 200
        # loopback is no longer trusted: its X-Forwarded-For is ignored
        loopback = from_(application, GATEWAY)
        for _ in range(10):
            loopback.get("/api/v1/runs", headers={**WRONG, "X-Forwarded-For": ATTACKER})
        r = loopback.get("/api/v1/runs", headers={**RIGHT, "X-Forwarded-For": OPERATOR})
        assert r.status_code == 429

    def test_an_entry_that_is_not_an_address_is_refused_at_start(self):
        with pytest.raises(ValidationError, match="'gateway' is not an IP address"):
            Settings(forwarded_allow_ips="127.0.0.1, gateway")


class TestSignIn:
    def test_past_the_limit_the_sign_in_says_so_with_retry_after(self, app, clock):  # noqa: F811
        browser = from_(app, ATTACKER)
        for _ in range(10):
            r = browser.post("/ui/login", data={"token": "guess"}, follow_redirects=False)
            assert r.status_code == 401
        r = browser.post("/ui/login", data={"token": TOKEN}, follow_redirects=False)
        assert r.status_code == 429
        assert r.headers["retry-after"] == "60"
        assert "Too many wrong tokens from your address" in r.text
        assert "try again in 60 seconds" in r.text
        assert "set-cookie" not in r.headers
        other = from_(app, OPERATOR).post(
            "/ui/login", data={"token": TOKEN}, follow_redirects=False
        )
        assert other.status_code == 303

    def test_the_api_and_the_sign_in_share_one_count_per_address(self, app, clock):  # noqa: F811
        before = failures("signin", "true")
        client = from_(app, ATTACKER)
        for _ in range(5):
            client.get("/api/v1/runs", headers=WRONG)
            client.post("/ui/login", data={"token": "guess"})
        assert client.post("/ui/login", data={"token": TOKEN}).status_code == 429
        assert failures("signin", "true") - before == 1

    def test_a_signed_in_browser_keeps_its_buttons_on_a_throttled_address(self, app, clock):  # noqa: F811
        browser = from_(app, ATTACKER)
        browser.post("/ui/login", data={"token": TOKEN}, follow_redirects=False)
        page = browser.get("/ui/runs")
        csrf = re.search(r'name="csrf-token" content="([^"]+)"', page.text).group(1)
        for _ in range(10):
            browser.get("/api/v1/runs", headers=WRONG)
        assert browser.get("/api/v1/runs", headers=RIGHT).status_code == 429
        # the dashboard's own call for the session is not a guess
        assert browser.get("/ui/api/v1/runs").status_code == 200
        r = browser.post("/ui/api/v1/runs/nope/cancel", headers={"X-CSRF-Token": csrf})
        assert r.status_code == 404


class TestThrottle:
    def test_the_table_stays_bounded_forgetting_the_window_that_began_first(self):
        clock = Clock()
        throttle = AuthThrottle(2, 60.0, max_addresses=100, clock=clock)
        for i in range(1000):
            throttle.failed(f"10.0.{i // 256}.{i % 256}", "api")
            throttle.failed(f"10.0.{i // 256}.{i % 256}", "api")
            clock.now += 0.01
        assert len(throttle) == 100
        assert throttle.retry_after("10.0.3.231", "api") is not None  # among the newest
        assert throttle.retry_after("10.0.0.0", "api") is None  # forgotten first

    def test_ended_windows_make_room_before_a_live_one_is_forgotten(self):
        clock = Clock()
        throttle = AuthThrottle(1, 60.0, max_addresses=2, clock=clock)
        throttle.failed("192.0.2.1", "api")
        clock.now += 30
        throttle.failed("192.0.2.2", "api")
        clock.now += 31  # the first window has ended, the second has not
        throttle.failed("192.0.2.3", "api")
        assert len(throttle) == 2
        assert throttle.retry_after("192.0.2.2", "api") == 29

    def test_a_warning_says_when_the_table_is_full_once_per_window(self, caplog):
        caplog.set_level(logging.WARNING, "hookrun.status.guard")
        throttle = AuthThrottle(5, 60.0, max_addresses=10, clock=Clock())
        for i in range(50):
            throttle.failed(f"192.0.2.{i}", "signin")
        assert sum("more than 10 addresses" in r.getMessage() for r in caplog.records) == 1


@pytest.mark.parametrize(("token", "warned"), [("dev-admin-token", True), ("x" * 24, False)])
def test_a_short_admin_token_is_warned_of_at_start(caplog, token, warned):
    caplog.set_level(logging.WARNING, "hookrun.status.app")
    warn_of_a_short_token(Settings(hookrun_admin_token=token))
    messages = [r.getMessage() for r in caplog.records]
    assert any("HOOKRUN_ADMIN_TOKEN has 15 characters" in m for m in messages) == warned
    assert not any(token in m for m in messages)


def test_through_the_gateway_a_forged_x_forwarded_for_buys_no_fresh_address(app, clock):  # noqa: F811
    # The gateway reaches status from loopback, as under `make run`, and replaces the header.
    gateway = gateway_for(httpx.ASGITransport(app=app))
    with TestClient(gateway, client=(ATTACKER, 50000)) as attacker:
        for i in range(10):
            forged = {**WRONG, "X-Forwarded-For": f"192.0.2.{i}"}
            assert attacker.get("/api/v1/runs", headers=forged).status_code == 401
        r = attacker.get("/api/v1/runs", headers={**RIGHT, "X-Forwarded-For": OPERATOR})
        assert (r.status_code, r.headers["retry-after"]) == (429, "60")
        assert ATTACKER in r.json()["error"]
    with TestClient(gateway, client=(OPERATOR, 50000)) as operator:
        assert operator.get("/api/v1/runs", headers=RIGHT).status_code == 200
