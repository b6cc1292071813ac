"""The dashboard in a real headless Chromium against the whole system, through the gateway.

``HOOKRUN_SCREENSHOTS=docs/screenshots`` also saves a screenshot of each page there.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

from hookrun.dev.pytest_kafka import missing_part, new_namespace
from tests.e2e.support import ADMIN_TOKEN, System, run_id_of, wait_for

pytestmark = pytest.mark.e2e

#: Without the background-networking flags Chromium keeps trying to reach Google's services,
#: which is slow on a closed network.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1280,900",
]
SHOTS = os.environ.get("HOOKRUN_SCREENSHOTS")


@pytest.fixture(scope="module")
def system(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    started = System(
        kafka_bootstrap, tmp_path_factory.mktemp("ui"), namespace=new_namespace("e2e-ui")
    )
    try:
        yield started.start()
    finally:
        started.stop()


def chromium_paths() -> tuple[str, str]:
    """Debian's chromium and chromium-driver (``make setup-browser``); fail under CI if missing."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if browser is None or driver is None:
        missing_part("chromium and chromedriver not found (make setup-browser, as root)")
    return browser, driver


@pytest.fixture(scope="module")
def browser(system: System) -> Iterator[WebDriver]:
    """One headless Chromium for the module, with a fresh profile."""
    binary, driver = chromium_paths()
    profile = tempfile.mkdtemp(prefix="hookrun-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in [*CHROMIUM_FLAGS, f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    chrome = webdriver.Chrome(service=Service(driver), options=options)
    chrome.set_page_load_timeout(30)
    try:
        yield chrome
    finally:
        chrome.quit()
        shutil.rmtree(profile, ignore_errors=True)


def until(chrome: WebDriver, check, what: str, timeout_s: float = 30):
    """Wait for ``check(chrome)`` to be truthy; fail naming ``what``."""
    try:
        return WebDriverWait(chrome, timeout_s, 0.1, ignored_exceptions=[WebDriverException]).until(
            check, f"timed out waiting for {what}"
        )
    except Exception as exc:
        raise AssertionError(f"{what}: {exc}\npage:\n{chrome.page_source[:3000]}") from exc


def found(css: str):
    def check(chrome: WebDriver) -> WebElement | None:
        elements = chrome.find_elements(By.CSS_SELECTOR, css)
        return elements[0] if elements else None

    return check


def shot(chrome: WebDriver, name: str) -> None:
    """The whole page (up to 2,000 px high) as ``<HOOKRUN_SCREENSHOTS>/<name>.png``, if asked."""
    if not SHOTS:
        return
    Path(SHOTS).mkdir(parents=True, exist_ok=True)
    height = chrome.execute_script("return document.documentElement.scrollHeight")
    chrome.set_window_size(1280, min(int(height) + 20, 2000))
    try:
        chrome.save_screenshot(str(Path(SHOTS) / f"{name}.png"))
    finally:
        chrome.set_window_size(1280, 900)


def text_of(chrome: WebDriver, css: str) -> str | None:
    """The text of the first element ``css`` selects, read at once: the run page swaps its live
    part when the run changes, so an element found a moment earlier may be gone."""
    return chrome.execute_script(
        "const e = document.querySelector(arguments[0]); return e ? e.textContent.trim() : null",
        css,
    )


def status_of(chrome: WebDriver) -> str | None:
    return text_of(chrome, "#run-status .badge")


def blocked_by_csp(chrome: WebDriver) -> list[str]:
    """The console's Content-Security-Policy violations since the last call."""
    return [
        e["message"] for e in chrome.get_log("browser") if "Content Security Policy" in e["message"]
    ]


def signed_in(browser: WebDriver, system: System) -> WebDriver:
    browser.get(f"{system.base}/ui/runs")
    if "/ui/login" in browser.current_url:
        browser.find_element(By.ID, "token").send_keys(ADMIN_TOKEN)
        browser.find_element(By.CSS_SELECTOR, "form[action='/ui/login'] button").click()
        until(browser, found("#runs"), "the runs page after sign-in")
    return browser


def test_a_wrong_token_is_refused_with_a_message_and_the_right_one_signs_in(
    browser: WebDriver, system: System
) -> None:
    browser.get(f"{system.base}/ui/")
    until(browser, found("#token"), "the sign-in form")
    shot(browser, "sign-in")
    browser.find_element(By.ID, "token").send_keys("not-the-token")
    browser.find_element(By.CSS_SELECTOR, "form[action='/ui/login'] button").click()
    error = until(browser, found("#login-error"), "the wrong-token message")
    assert "not the admin token" in error.text
    assert browser.get_cookies() == []
    signed_in(browser, system)
    [cookie] = browser.get_cookies()
    assert cookie["httpOnly"] is True and cookie["sameSite"] == "Strict"
    assert cookie["path"] == "/ui"
    # a visitor without the cookie is still sent to the sign-in through the gateway
    stranger = httpx.get(f"{system.base}/ui/runs", follow_redirects=False, timeout=10)
    assert (stranger.status_code, stranger.headers["location"]) == (303, "/ui/login")


def test_a_launched_run_appears_and_finishes_without_a_reload(
    browser: WebDriver, system: System
) -> None:
    chrome = signed_in(browser, system)
    chrome.get(f"{system.base}/ui/runs")
    until(chrome, found("#live-state.connected"), "the live feed to connect")
    chrome.execute_script("window.sameDocument = true")
    run_id = run_id_of(system.launch("gh-ok", {"n": 7, "note": "<script>alert(1)</script>"}))
    row = f'tr[data-run-id="{run_id}"]'
    until(chrome, found(row), f"run {run_id} in the list")
    assert "gh-ok" in (text_of(chrome, row) or "")
    until(
        chrome,
        lambda c: "SUCCESS" in (text_of(c, row) or ""),
        "the run to turn SUCCESS in the list",
        60,
    )
    assert chrome.execute_script("return window.sameDocument") is True  # never reloaded

    # open it: its execution, exit code, and the payload shown as text, never run
    # the row is replaced whenever the run changes: find and click it in one try
    until(chrome, lambda c: c.find_element(By.CSS_SELECTOR, f"{row} a").click() or True, "click")
    until(chrome, found("#run-id"), "the run page")
    assert chrome.find_element(By.ID, "run-id").text == run_id
    until(chrome, lambda c: text_of(c, ".exit-code") == "0", "the exit code 0")
    editor = chrome.find_element(By.ID, "replay-payload")
    assert json.loads(editor.get_attribute("value")) == {
        "n": 7,
        "note": "<script>alert(1)</script>",
    }
    assert not chrome.find_elements(By.XPATH, "//script[contains(., 'alert')]")

    # redeliver: the receiver gets the run's notification a second time
    until(chrome, lambda c: len(system.notifications(run_id)) == 1, "the first notification", 60)
    # the buttons are in the live part, replaced whenever the run changes
    until(chrome, lambda c: c.find_element(By.ID, "redeliver").click() or True, "click redeliver")
    until(chrome, lambda c: "Redelivery requested" in (text_of(c, "#flash") or ""), "ok")
    wait_for(lambda: len(system.notifications(run_id)) >= 2, 60, "the redelivered notification")


def test_a_run_is_replayed_with_an_edited_payload(browser: WebDriver, system: System) -> None:
    chrome = signed_in(browser, system)
    original = run_id_of(system.launch("gh-ok", {"n": 3}))
    chrome.get(f"{system.base}/ui/runs/{original}")
    until(chrome, lambda c: status_of(c) == "SUCCESS", "the original run to succeed", 60)
    chrome.find_element(By.CSS_SELECTOR, "#replay-editor summary").click()
    editor = chrome.find_element(By.ID, "replay-payload")
    assert json.loads(editor.get_attribute("value")) == {"n": 3}

    # a payload that is not JSON is refused in the page, naming why
    editor.clear()
    editor.send_keys('{"n": ')
    chrome.find_element(By.ID, "replay").click()
    until(chrome, lambda c: "not valid JSON" in (text_of(c, "#flash") or ""), "the JSON error")
    assert text_of(chrome, "#run-id") == original

    editor.clear()
    editor.send_keys('{"n": 11}')
    chrome.find_element(By.ID, "replay").click()
    until(chrome, lambda c: text_of(c, "#run-id") not in (None, original), "the replay's page")
    replay = text_of(chrome, "#run-id")
    until(chrome, lambda c: status_of(c) == "SUCCESS", "the replay to succeed", 60)
    assert original in (text_of(chrome, "#replay-of") or "")
    editor = chrome.find_element(By.ID, "replay-payload")
    assert json.loads(editor.get_attribute("value")) == {"n": 11}
    notification = system.notification(replay)
    assert notification["invocation"]["payload"] == {"n": 11}
    # the execution got the edited payload (the step echoes it in its output)
    assert list(notification["output"].values()) == [{"params": {"n": 11}, "payload": {"n": 11}}]
    assert notification["invocation"]["context"]["replay_of"] == original
    chrome.get(f"{system.base}/ui/runs/{original}")
    until(chrome, lambda c: replay in (text_of(c, "#replays") or ""), "the original's replays")


def test_a_running_run_is_canceled_from_its_page(browser: WebDriver, system: System) -> None:
    chrome = signed_in(browser, system)
    run_id = run_id_of(system.launch("sw-hold", {"x": 1}))
    chrome.get(f"{system.base}/ui/runs/{run_id}")
    until(chrome, found("#live"), "the run page")
    until(chrome, found(".execution .s-running"), "the execution to be running (live)", 60)
    until(chrome, lambda c: c.find_element(By.ID, "cancel").click() or True, "click cancel")
    until(chrome, lambda c: "Cancel requested" in (text_of(c, "#flash") or ""), "ok")
    until(chrome, lambda c: status_of(c) == "CANCELED", "the run to show CANCELED (live)", 60)


def test_a_pipeline_is_drawn_as_its_dag_with_each_nodes_state(
    browser: WebDriver, system: System
) -> None:
    chrome = signed_in(browser, system)
    run_id = run_id_of(system.launch("token-pipe", {"token": "t-1"}))
    chrome.get(f"{system.base}/ui/runs/{run_id}")
    until(chrome, lambda c: status_of(c) == "SUCCESS", "the pipeline run to succeed", 60)
    states = chrome.execute_script(
        "return Object.fromEntries(Array.from(document.querySelectorAll('svg.dag g.node'),"
        " (n) => [n.dataset.node, n.dataset.state]))"
    )
    assert states == {"produce": "SUCCESS", "consume": "SUCCESS"}
    # every page so far used only what the policy allows (no inline script or style)
    assert blocked_by_csp(chrome) == []
    shot(chrome, "run-pipeline")


def test_triggers_show_rejected_launches_and_subscriptions_their_health(
    browser: WebDriver, system: System
) -> None:
    chrome = signed_in(browser, system)
    refused = system.launch("gh-ok", {"n": 1}, headers={"X-Hub-Signature-256": "sha256=00"})
    assert refused.status_code == 400
    chrome.get(f"{system.base}/ui/triggers/gh-ok")

    def rejection_logged(c: WebDriver) -> bool:
        c.refresh()
        return bool(c.find_elements(By.CSS_SELECTOR, "tr.o-rejected"))

    until(chrome, rejection_logged, "the rejected launch in the trigger log", 60)
    reason = chrome.find_element(By.CSS_SELECTOR, "tr.o-rejected .reason").text
    assert "signature" in reason.lower(), reason
    chrome.get(f"{system.base}/ui/runs")
    until(chrome, found("#live-state.connected"), "the live feed to connect")
    shot(chrome, "runs")
    chrome.get(f"{system.base}/ui/triggers")
    row = chrome.find_element(By.CSS_SELECTOR, 'tr[data-trigger-id="gh-ok"]')
    assert "rejected" in row.text
    shot(chrome, "triggers")
    chrome.get(f"{system.base}/ui/subscriptions")
    until(chrome, found("tr[data-subscription-id]"), "a subscription row")
    assert "%" in chrome.find_element(By.CSS_SELECTOR, "tr[data-subscription-id]").text
    shot(chrome, "subscriptions")


def test_the_admin_feed_streams_runs_as_json_through_the_gateway(system: System) -> None:
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    with httpx.stream(
        "GET",
        f"{system.base}/api/v1/runs/stream",
        params={"trigger_id": "gh-ok"},
        headers=headers,
        timeout=30,
    ) as feed:
        assert feed.headers["content-type"].startswith("text/event-stream")
        lines = feed.iter_lines()
        assert next(lines) == "retry: 2000"
        run_id = run_id_of(system.launch("gh-ok", {"n": 2}))
        event: dict[str, str] = {}
        for line in lines:
            if not line:
                if event.get("event") == "run" and json.loads(event["data"])["run_id"] == run_id:
                    break
                event = {}
                continue
            key, _, value = line.partition(": ")
            event[key] = value
        run = json.loads(event["data"])
        assert run["trigger_id"] == "gh-ok" and event["id"]


def test_a_guesser_is_throttled_by_its_own_address_not_the_operators(system: System) -> None:
    # Two clients on loopback: the guesser from 127.0.0.2, the operator from 127.0.0.1.
    guesser = httpx.Client(
        base_url=system.base, timeout=30, transport=httpx.HTTPTransport(local_address="127.0.0.2")
    )
    with guesser:
        for i in range(10):
            # a forged X-Forwarded-For is replaced by the gateway, so it buys no fresh address
            forged = {"Authorization": "Bearer guess", "X-Forwarded-For": f"192.0.2.{i}"}
            assert guesser.get("/api/v1/runs", headers=forged).status_code == 401
        refused = guesser.post("/ui/login", data={"token": ADMIN_TOKEN})
        assert refused.status_code == 429 and int(refused.headers["retry-after"]) > 0
        assert "127.0.0.2" in refused.text
    right = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    assert system.http.get("/api/v1/runs", headers=right).status_code == 200
