"""The dashboard at /ui/: sign-in, session cookie, CSRF, escaping, pages and the live run feed."""

from __future__ import annotations

import asyncio
import base64
import html
import re
from pathlib import Path

import orjson
import pytest

from hookrun.events import RunCancelRequested, RunStatus, TriggerLaunched, topics
from hookrun.status import dag, stream
from hookrun.status.dashboard import COOKIE, CSP, Sessions
from hookrun.status.handlers import Deps
from hookrun.status.store import RunFilter
from tests.status.factories import canceled, launched, run_events
from tests.status.test_routes import TOKEN, app, client, subscribe  # noqa: F401 (fixtures)


def sign_in(client) -> str:  # noqa: F811
    """Sign in; return the page's CSRF token."""
    r = client.post("/ui/login", data={"token": TOKEN}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/ui/runs"
    page = client.get("/ui/runs")
    assert page.status_code == 200
    return re.search(r'name="csrf-token" content="([^"]+)"', page.text).group(1)


async def a_running_and_a_finished_run(app) -> tuple[TriggerLaunched, TriggerLaunched]:  # noqa: F811
    """Two stored runs of trigger tok (no subscription): one running, one that succeeded."""
    running, done = launched("tok"), launched("tok")
    unfinished = run_events(running, [RunStatus.SUCCESS], finish=False)
    await app.state.feed([running, *unfinished, done, *run_events(done, [RunStatus.SUCCESS])])
    return running, done


class TestSignIn:
    def test_a_wrong_token_gets_a_clear_message_and_no_cookie(self, client):  # noqa: F811
        r = client.post("/ui/login", data={"token": "guess"}, follow_redirects=False)
        assert r.status_code == 401
        assert "That is not the admin token" in r.text
        assert "set-cookie" not in r.headers
        assert client.get("/ui/runs", follow_redirects=False).headers["location"] == "/ui/login"

    def test_the_right_token_sets_a_strict_httponly_cookie_scoped_to_ui(self, client):  # noqa: F811
        r = client.post("/ui/login", data={"token": TOKEN}, follow_redirects=False)
        cookie = r.headers["set-cookie"]
        assert cookie.startswith(f"{COOKIE}=")
        for attribute in ("HttpOnly", "SameSite=strict", "Path=/ui", "Max-Age=43200"):
            assert attribute.lower() in cookie.lower(), cookie
        assert "secure" not in cookie.lower()  # plain http: a Secure cookie would never return

    def test_the_cookie_is_secure_when_the_browser_came_over_https(self, client):  # noqa: F811
        r = client.post(
            "/ui/login",
            data={"token": TOKEN},
            headers={"X-Forwarded-Proto": "https"},
            follow_redirects=False,
        )
        assert "; secure" in r.headers["set-cookie"].lower()

    def test_pages_and_the_api_bridge_need_a_session(self, client):  # noqa: F811
        for path in ("/ui/runs", "/ui/runs/r-1", "/ui/triggers", "/ui/subscriptions"):
            r = client.get(path, follow_redirects=False)
            assert (r.status_code, r.headers["location"]) == (303, "/ui/login"), path
        assert client.get("/ui/api/v1/runs").status_code == 401
        assert client.get("/ui/runs/stream").status_code == 401

    def test_sign_out_needs_the_csrf_token_and_ends_the_session(self, client):  # noqa: F811
        csrf = sign_in(client)
        assert client.post("/ui/logout", data={"csrf": "wrong"}).status_code == 403
        assert client.get("/ui/runs", follow_redirects=False).status_code == 200
        r = client.post("/ui/logout", data={"csrf": csrf}, follow_redirects=False)
        assert r.headers["location"] == "/ui/login"
        assert client.get("/ui/runs", follow_redirects=False).status_code == 303


class TestSessions:
    def test_a_tampered_an_expired_and_another_tokens_cookie_are_refused(self):
        now = [1000.0]
        sessions = Sessions(b"k" * 32, "admin", ttl_s=60, clock=lambda: now[0])
        cookie, session = sessions.issue()
        assert sessions.read(cookie) == session
        _, mac = cookie.split(".")
        forged = orjson.dumps({"csrf": session.csrf, "exp": 10**12})
        assert sessions.read(base64.urlsafe_b64encode(forged).decode() + "." + mac) is None
        assert Sessions(b"k" * 32, "new-admin-token", ttl_s=60).read(cookie) is None
        now[0] += 61
        assert sessions.read(cookie) is None
        assert sessions.read("garbage") is None and sessions.read(None) is None


class TestActions:
    async def test_a_post_without_the_csrf_token_changes_nothing(self, client, app):  # noqa: F811
        run = launched("tok")
        await app.state.feed([run])
        csrf = sign_in(client)
        r = client.post(f"/ui/api/v1/runs/{run.run_id}/cancel", json={})
        assert r.status_code == 403 and "CSRF" in r.json()["error"]
        r = client.post(
            f"/ui/api/v1/runs/{run.run_id}/cancel", json={}, headers={"X-CSRF-Token": "x"}
        )
        assert r.status_code == 403
        assert app.state.event_log.events == []
        r = client.post(
            f"/ui/api/v1/runs/{run.run_id}/cancel",
            json={"reason": "from the dashboard"},
            headers={"X-CSRF-Token": csrf},
        )
        assert r.status_code == 202, r.text
        [cancel] = app.state.event_log.events
        assert isinstance(cancel, RunCancelRequested) and cancel.reason == "from the dashboard"

    async def test_the_bridge_answers_as_the_admin_api_does(self, client, app):  # noqa: F811
        done = launched("tok")
        await app.state.feed([done, *run_events(done, [RunStatus.SUCCESS])])
        csrf = sign_in(client)
        r = client.post(
            f"/ui/api/v1/runs/{done.run_id}/cancel", json={}, headers={"X-CSRF-Token": csrf}
        )
        assert r.status_code == 409 and r.json()["error"].startswith("run already finished")
        r = client.get("/ui/api/v1/runs", params={"trigger_id": "tok"})
        assert [x["run_id"] for x in r.json()["runs"]] == [done.run_id]
        for path in ("../../openapi.json", "runs/stream", "runs//x"):
            assert client.get(f"/ui/api/v1/{path}").status_code == 404, path


class TestPages:
    async def test_a_script_in_a_payload_is_shown_as_text(self, client, app):  # noqa: F811
        body = b'{"name": "<script>alert(1)</script>", "n": 1}'
        run = launched("tok", body=body)
        await app.state.feed([run, *run_events(run, [RunStatus.SUCCESS])])
        sign_in(client)
        r = client.get(f"/ui/runs/{run.run_id}")
        assert r.status_code == 200
        assert r.headers["content-security-policy"] == CSP
        assert "script-src 'self'" in CSP and "unsafe-inline" not in CSP
        assert "<script>alert(1)</script>" not in r.text
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in r.text  # the replay editor's payload
        # the only script element is the dashboard's own file
        assert re.findall(r"<script[^>]*>", r.text) == [
            '<script src="/ui/static/dashboard.js" defer>'
        ]

    async def test_the_run_list_filters_and_pages(self, client, app):  # noqa: F811
        runs = [launched("tok") for _ in range(3)]
        other = launched("other")
        await app.state.feed([*runs, other, *run_events(runs[0], [RunStatus.FAILURE])])
        sign_in(client)
        page = client.get("/ui/runs", params={"trigger_id": "tok"}).text
        shown = re.findall(r'data-run-id="([^"]+)"', page)
        assert sorted(shown) == sorted(r.run_id for r in runs)
        failed = client.get("/ui/runs", params={"status": "FAILURE"}).text
        assert re.findall(r'data-run-id="([^"]+)"', failed) == [runs[0].run_id]
        bad = client.get("/ui/runs", params={"status": "nope"}).text
        assert "unknown status &#39;nope&#39;" in bad

    async def test_a_run_page_shows_executions_deliveries_and_the_pipeline_dag(
        self,
        client,  # noqa: F811
        app,  # noqa: F811
    ):
        run = launched("tok")
        events = run_events(run, [RunStatus.FAILURE], pipeline=True, deliveries=2)
        await app.state.feed([run, *events])
        sign_in(client)
        r = client.get(f"/ui/runs/{run.run_id}")
        assert r.status_code == 200
        assert '<td class="exit-code">1</td>' in r.text
        assert "boom" in r.text  # the stderr tail
        assert '<svg class="dag"' in r.text and 'data-node="a"' in r.text
        assert "hookrun.trigger.launched" in r.text  # the timeline
        assert 'id="replay-payload"' in r.text and "&#34;n&#34;: 1" in r.text

    async def test_a_canceled_delivery_shows_why(
        self,
        client,  # noqa: F811
        app,  # noqa: F811
    ):
        run = launched("tok")
        await app.state.feed([run, *run_events(run, [RunStatus.SUCCESS]), canceled(run.run_id)])
        sign_in(client)
        page = client.get(f"/ui/runs/{run.run_id}").text
        assert 'class="badge s-canceled">canceled<' in page
        assert "the subscription was deleted" in page

    async def test_a_finished_run_without_deliveries_does_not_promise_one(
        self,
        client,  # noqa: F811
        app,  # noqa: F811
    ):
        running, done = await a_running_and_a_finished_run(app)
        sign_in(client)
        waiting = client.get(f"/ui/runs/{running.run_id}").text
        assert "a notification is sent once the run finishes" in waiting
        finished = client.get(f"/ui/runs/{done.run_id}").text
        assert "a notification is sent once the run finishes" not in finished
        assert "no subscription of this trigger wants this run's notification" in finished

    async def test_a_run_page_offers_only_the_actions_the_admin_api_would_take(
        self,
        client,  # noqa: F811
        app,  # noqa: F811
    ):
        running, done = await a_running_and_a_finished_run(app)
        sign_in(client)

        def buttons(run_id: str) -> tuple[dict[str, bool], str | None]:
            """The run's cancel and redeliver buttons (whether disabled), and the reason shown."""
            page = client.get(f"/ui/runs/{run_id}").text
            shown = {
                name: " disabled" in attributes
                for attributes in re.findall(r"<button ([^>]*)>", page)
                for name in re.findall(r'id="(cancel|redeliver)"', attributes)
            }
            why = re.search(r'<span class="hint" id="redeliver-refused">([^<]*)</span>', page)
            return shown, None if why is None else html.unescape(why.group(1))

        # a running run: cancel it, nothing to redeliver yet
        assert buttons(running.run_id) == (
            {"cancel": False, "redeliver": True},
            "run has not finished; there is nothing to redeliver",
        )
        # a finished run of a trigger without subscriptions: no cancel, nothing to redeliver
        assert buttons(done.run_id) == (
            {"redeliver": True},
            "nothing to redeliver: trigger tok has no subscription",
        )
        subscribe(app, statuses=["FAILURE"])
        assert buttons(done.run_id)[1] == (
            "nothing to redeliver: no enabled subscription of trigger tok has SUCCESS in its statuses"
        )
        # a subscription that takes the run: the button as the admin API would accept it
        subscribe(app)
        assert buttons(done.run_id) == ({"redeliver": False}, None)

    async def test_triggers_show_rejections_and_subscriptions_their_success_rate(
        self,
        client,  # noqa: F811
        app,  # noqa: F811
    ):
        run = launched("tok")
        await app.state.feed([run, *run_events(run, [RunStatus.SUCCESS], deliveries=1)])
        sign_in(client)
        triggers = client.get("/ui/triggers")
        assert triggers.status_code == 200 and 'data-trigger-id="gh"' in triggers.text
        log = client.get("/ui/triggers/tok")
        assert log.status_code == 200
        subs = client.get("/ui/subscriptions")  # this config has none (tests/e2e shows rows)
        assert subs.status_code == 200 and "No subscriptions" in subs.text


def test_a_dag_is_laid_out_in_columns_by_dependency():
    drawing = dag.layout(
        {"extract": "s", "train": "s", "report": "s", "lint": "s"},
        [["extract", "train"], ["train", "report"], ["extract", "report"]],
        {"extract": "succeeded"},
    )
    x = {b.name: b.x for b in drawing.boxes}
    assert x["extract"] == x["lint"] < x["train"] < x["report"]
    assert {b.name: b.state for b in drawing.boxes}["train"] == "pending"
    assert len(drawing.arrows) == 3


def test_a_dag_box_is_wide_enough_for_its_text_and_cuts_what_is_too_long():
    # the example config's pipeline: "SUCCESS · Batch feature extraction" fits in its box
    drawing = dag.layout(
        {"extract": "Batch feature extraction", "train": "Train model"},
        [["extract", "train"]],
        {"extract": "SUCCESS", "train": "SUCCESS"},
    )
    extract, train = drawing.boxes
    assert extract.state_text == "SUCCESS \u00b7 Batch feature extraction"
    room = drawing.node_width - 2 * dag.PAD_X
    assert len(extract.state_text) * dag.CHAR_W <= room
    assert train.x >= extract.x + drawing.node_width + dag.GAP_X  # the columns do not overlap
    assert drawing.width >= train.x + drawing.node_width
    # a step name longer than the widest box is cut, never drawn past the box
    [long] = dag.layout({"n": "x" * 200}, [], {}).boxes
    assert long.state_text.endswith("\u2026") and long.state_text.startswith("pending \u00b7 xx")
    assert len(long.state_text) * dag.CHAR_W <= dag.NODE_W_MAX - 2 * dag.PAD_X


def _stylesheet() -> list[tuple[list[str], dict[str, str]]]:
    """dashboard.css as (selectors, declarations) per rule, in order."""
    css = (Path(dag.__file__).parent / "static" / "dashboard.css").read_text()
    rules = []
    for selectors, body in re.findall(r"([^{}]+)\{([^{}]*)\}", re.sub(r"/\*.*?\*/", "", css)):
        pairs = (d.split(":", 1) for d in body.split(";") if ":" in d)
        rules.append(
            ([x.strip() for x in selectors.split(",")], {k.strip(): v.strip() for k, v in pairs})
        )
    return rules


def _colours(state: str) -> tuple[str, str]:
    """The background of a badge and the fill of a DAG node in ``state``, as the stylesheet
    cascades them: in document order among equally specific selectors, ``svg.dag .s-x rect``
    over ``svg.dag rect``, custom properties inherited from the node to its rect."""
    rules, cls = _stylesheet(), f".s-{state.lower()}"

    def merged(*wanted: str) -> dict[str, str]:
        out: dict[str, str] = {}
        for selectors, decls in rules:
            if any(w in selectors for w in wanted):
                out.update(decls)
        return out

    tone = merged(cls)

    def value(text: str) -> str:
        var = re.fullmatch(r"var\((--[\w-]+)(?:,\s*(.+))?\)", text)
        return text if var is None else tone.get(var[1], var[2])

    badge = merged(".badge", cls)
    node = {**merged("svg.dag rect"), **merged(f"svg.dag {cls} rect")}
    return value(badge["background"]), value(node["fill"])


@pytest.mark.parametrize("state", [*RunStatus, "CREATED", "RUNNING", "skipped"])
def test_a_dag_node_has_its_states_badge_colour(state):
    badge, node = _colours(state)
    assert badge != "#e2e8f0", f"{state} has no badge colour"
    assert node == badge, f"a {state} node is not coloured as its badge"


class TestRunFeed:
    async def test_a_stored_change_comes_out_as_a_run_event_that_passes_the_filter(
        self,
        app,  # noqa: F811
    ):
        deps: Deps = app.state.deps
        feed = stream.run_events(deps, stream.matches(RunFilter(trigger_id="tok"), None))
        assert await anext(feed) == b"retry: 2000\n\n"
        mine, other = launched("tok"), launched("other")
        waiting = asyncio.ensure_future(anext(feed))
        await app.state.feed([other, mine])
        deps.progress.notify()
        chunk = await asyncio.wait_for(waiting, 5)
        [(event_id, data)] = re.findall(rb"id: (\S+)\nevent: run\ndata: (.+)\n\n", chunk)
        run = orjson.loads(data)
        assert run["run_id"] == mine.run_id and run["trigger_id"] == "tok"
        assert run["status"] is None and run["info_status"] == "pending"
        # resuming from that id sends only what changed after it
        topic = topics.named(topics.RUNS, deps.namespace)
        assert stream.parse_position(event_id.decode()) == await deps.store.offsets(topic)
        await feed.aclose()

    async def test_a_pages_feed_sends_what_changed_while_the_page_loaded(
        self,
        client,  # noqa: F811
        app,  # noqa: F811
    ):
        run, later = launched("tok"), launched("tok")
        await app.state.feed([run])
        sign_in(client)
        paths = (f"/ui/runs/{run.run_id}", "/ui/runs", f"/ui/runs/{later.run_id}")
        feeds = {}
        for path in paths:
            page = client.get(path)
            feeds[path] = html.unescape(re.search(r'data-stream="([^"]+)"', page.text)[1])
        assert page.status_code == 404 and "reloads when the run appears" in page.text
        # stored after the pages were read, before their scripts connect to the feed
        await app.state.feed([*run_events(run, [RunStatus.SUCCESS]), later])
        for path, feed in feeds.items():
            once = iter([False])
            app.state.closing = lambda once=once: next(once, True)  # one round, then the end
            sent = re.findall(r"event: run\ndata: (.+)\n", client.get(feed).text)
            shown = {r["run_id"]: r["status"] for r in map(orjson.loads, sent)}
            if path == "/ui/runs":
                assert shown == {run.run_id: "SUCCESS", later.run_id: None}, path
            else:
                assert shown == {path.rsplit("/", 1)[1]: "SUCCESS" if run.run_id in path else None}

    async def test_a_feed_ends_when_the_server_shuts_down(self, app):  # noqa: F811
        feed = stream.run_events(app.state.deps, lambda run: True, closing=lambda: True)
        assert [chunk async for chunk in feed] == [b"retry: 2000\n\n"]

    def test_a_bad_last_event_id_is_a_400(self):
        with pytest.raises(Exception, match="Last-Event-ID"):
            stream.parse_position("not-an-id")

    def test_the_same_offsets_are_the_same_position_whatever_their_order(self):
        # a rebuilt store lists its partitions in another order; its run list answers the same
        assert stream.position({5: 50, 0: 41}) == stream.position({0: 41, 5: 50})
        assert stream.parse_position(stream.position({5: 50, 0: 41})) == {0: 41, 5: 50}
