"""Hostile run-info requests against the status service in-process (SQLite store, Fake adapters).

Properties: never a 5xx; nothing appended; a request that fails the trigger's conditions gets
the uniform 400, and so does one with run_id outside the signed body of a trigger that signs
bodies; a correctly signed request for a run of that trigger gets its run info, and one for any
other run id a 404.
"""

from __future__ import annotations

import time
import urllib.parse
from dataclasses import dataclass

import orjson
import pytest
from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import strategies as st

from hookrun.config import parse_config
from hookrun.events import RunStatus
from hookrun.gateway.adapters import FakeEventLog
from hookrun.status.adapters import FakeLogEnds
from hookrun.status.app import build
from hookrun.status.config import Settings
from hookrun.status.sqlite import SqliteStore
from tests.fuzz.strategies import (
    CONFIG,
    SIGN_THE_BODY,
    SIGNABLE,
    Body,
    Launch,
    fuzz,
    garbage_signatures,
    header_name,
    header_value,
    huge_numbers,
    json_value,
    queries,
    signed_headers,
    too_deep,
    trigger_ids,
)
from tests.status.conftest import Feeder
from tests.status.factories import launched, run_events

LIMIT = 1024
EXAMPLES = 2500
REJECTED = {"error": "request rejected"}


@dataclass
class Runs:
    """The runs fed to the store: run id -> trigger id."""

    trigger_of: dict[str, str]


@pytest.fixture(scope="module")
def status(tmp_path_factory):
    store = SqliteStore(tmp_path_factory.mktemp("fuzz-status") / "status.db")
    event_log = FakeEventLog()
    settings = Settings(
        hookrun_admin_token="admin",
        hookrun_status_catch_up_timeout_s=0.2,
        hookrun_max_body_bytes=LIMIT,
    )
    app = build(
        settings,
        parse_config(CONFIG, "fuzz.yaml"),
        store=store,
        event_log=event_log,
        ends=FakeLogEnds(),
    )
    with TestClient(app, raise_server_exceptions=False) as client:
        feed = Feeder(store)
        trigger_of = {}
        for n, trigger_id in enumerate((*SIGNABLE, "ip", "disabled-one")):
            run = launched(trigger_id)
            outcomes = [RunStatus.SUCCESS] if n % 2 else [RunStatus.FAILURE, RunStatus.SUCCESS]
            client.portal.call(feed, [run, *run_events(run, outcomes, finish=n % 3 != 0)])
            trigger_of[run.run_id] = trigger_id
        yield client, event_log, Runs(trigger_of)


@st.composite
def run_info_requests(draw, run_ids: list[str]) -> tuple[str, Launch, str | None]:
    """(method, request, run id it names in the canonical place or None)."""
    method = draw(st.sampled_from(["GET", "POST"]))
    run_id = draw(st.one_of(st.sampled_from(run_ids), st.text(max_size=40), st.none()))
    query = draw(queries)
    query.pop("run_id", None)
    canonical: str | None = None
    if method == "GET" or draw(st.booleans()) is False:
        body = (
            Body(b"", None)
            if method == "GET"
            else draw(st.builds(Body, st.binary(max_size=200), st.none()))
        )
        if run_id is not None:
            query["run_id"] = run_id
            canonical = run_id if method == "GET" or not body.data else None
    else:
        doc = {"run_id": run_id} if run_id is not None else {}
        doc |= draw(
            st.dictionaries(
                st.text(max_size=8).filter(lambda k: k != "run_id"), st.text(max_size=8), max_size=3
            )
        )
        if draw(st.booleans()):
            body = Body(orjson.dumps(doc), "application/json")
        else:
            body = Body(urllib.parse.urlencode(doc).encode(), "application/x-www-form-urlencoded")
        canonical = run_id
    extra = draw(st.dictionaries(header_name, header_value, max_size=3))
    if draw(st.booleans()):
        trigger_id = draw(st.sampled_from(SIGNABLE))
        msg_id = "msg_" + draw(st.text("abcdef0123456789", min_size=1, max_size=12))
        now: int | str = int(time.time())
        signed = True
        if trigger_id in {"sw", "stripe", "slack"} and draw(st.booleans()):
            # correctly signed over a timestamp no sender makes
            now, signed = draw(huge_numbers), False
        headers = {**extra, **signed_headers(trigger_id, body.data, msg_id, now)}
        query.pop("token", None)
        if trigger_id == "query":
            query["token"] = "qtok"
        return method, Launch(trigger_id, body, headers, query, signed=signed), canonical
    headers = {**extra, **draw(garbage_signatures)}
    return method, Launch(draw(trigger_ids), body, headers, query, signed=False), canonical


@fuzz(EXAMPLES)
@given(data=st.data())
def test_run_info_never_fails_and_answers_only_the_triggers_own_runs(status, data):
    client, event_log, runs = status
    method, request, canonical = data.draw(run_info_requests(sorted(runs.trigger_of)))
    r = client.request(
        method, request.url("run/"), content=request.body.data, headers=request.all_headers()
    )
    assert r.status_code < 500, (r.status_code, r.text)
    assert event_log.events == []
    if request.trigger_id in SIGN_THE_BODY and (method == "GET" or "run_id" in request.query):
        # a run_id beside a body signature (or with no body at all) is not signed
        assert (r.status_code, r.json()) == (400, REJECTED)
    elif request.signed or request.trigger_id == "open":
        if canonical is not None and canonical != "":
            if runs.trigger_of.get(canonical) == request.trigger_id:
                assert r.status_code == 200, r.text
                assert r.json()["status"] in {
                    "pending",
                    "completed",
                    "error",
                    "complete_with_error",
                }
            else:
                assert (r.status_code, r.json()) == (404, {"error": "run not found"})
        else:
            assert r.status_code in {200, 400, 404}, r.text
            if r.status_code == 200:
                assert request.trigger_id in runs.trigger_of.values()
    else:
        assert (r.status_code, r.json()) == (400, REJECTED)


@fuzz(500)
@given(data=st.data())
def test_replay_never_fails_and_launches_only_a_known_run_of_an_enabled_trigger(status, data):
    client, event_log, runs = status
    run_id = data.draw(st.one_of(st.sampled_from(sorted(runs.trigger_of)), st.text(max_size=40)))
    body = data.draw(
        st.one_of(
            st.binary(max_size=200),
            st.builds(lambda v: orjson.dumps({"payload": v}), json_value),
            st.builds(lambda b: b'{"payload": ' + b.data + b"}", too_deep),
            st.just(b""),
        )
    )
    try:
        r = client.post(
            f"/api/v1/runs/{urllib.parse.quote(run_id, safe='')}/replay",
            content=body,
            headers={"Authorization": "Bearer admin"},
        )
        assert r.status_code < 500, (r.status_code, r.text)
        if r.status_code == 202:
            [event] = event_log.events
            assert r.json() == {"run_id": event.run_id, "replay_of": run_id}
            assert event.replay_of == run_id
            assert event.trigger_id == runs.trigger_of[run_id] != "disabled-one"
            doc = orjson.loads(body) if body.strip() else {}
            if "payload" in doc:
                assert event.request.payload() == doc["payload"]
            else:
                assert event.request.body() == b'{"n": 1}'  # the original's
        else:
            assert event_log.events == []
            assert r.status_code in {400, 404, 409, 413}, r.text
    finally:
        # the run-info property holds the log empty: each example starts from there
        event_log.events.clear()
