"""`hookrun` commands against the status service's admin API, in process."""

from __future__ import annotations

import orjson
import pytest
from click.testing import CliRunner, Result

from hookrun.cli import main
from hookrun.cli.api import Api
from hookrun.events import RunStatus
from tests.status.conftest import config, feed, store  # noqa: F401 (fixtures)
from tests.status.factories import canceled, launched, run_events
from tests.status.test_routes import TOKEN, app, client  # noqa: F401 (fixtures)

URL = "http://testserver"


@pytest.fixture
def api(client, monkeypatch) -> Api:  # noqa: F811
    """The CLI's Api, talking to the status app of the ``client`` fixture."""
    api = Api(URL, TOKEN)
    api.http = client
    monkeypatch.setattr(main.Options, "api", lambda opts: api)
    return api


def hookrun(*args: str) -> Result:
    return CliRunner().invoke(main.cli, [*args, "--url", URL, "--token", TOKEN])


async def test_watch_shows_what_changed_between_its_list_and_its_feed(
    api,
    client,  # noqa: F811
    app,  # noqa: F811
    monkeypatch,
):
    run, later = launched("tok"), launched("tok")
    await app.state.feed([run])
    listed = Api.stream
    calls = []

    def stream(self, path, params, last_id):
        calls.append(last_id)
        if len(calls) > 1:
            raise KeyboardInterrupt  # the feed's first round is all this test reads
        # stored after the list was read, before the feed connects
        client.portal.call(app.state.feed, [*run_events(run, [RunStatus.SUCCESS]), later])
        once = iter([False])
        app.state.closing = lambda: next(once, True)
        yield from listed(self, path, params, last_id)

    monkeypatch.setattr(Api, "stream", stream)
    done = hookrun("runs", "watch", "--json")
    assert done.exit_code == 0, done.output
    shown = [(r["run_id"], r["status"]) for r in map(orjson.loads, done.output.splitlines())]
    assert shown[0] == (run.run_id, None)  # the list
    assert set(shown[1:]) == {(run.run_id, "SUCCESS"), (later.run_id, None)}  # the feed


async def test_redeliver_says_why_nothing_would_be_sent(api, app):  # noqa: F811
    run = launched("tok")
    await app.state.feed([run, *run_events(run, [RunStatus.SUCCESS])])
    done = hookrun("runs", "redeliver", run.run_id)
    assert done.exit_code == 1
    assert done.output == (
        f"hookrun: {URL} answered 409: nothing to redeliver: trigger tok has no subscription\n"
    )
    assert app.state.event_log.events == []


async def test_show_gives_each_deliverys_state_and_why(api, app):  # noqa: F811
    run = launched("tok")
    ended = canceled(
        run.run_id, n=2, reason="the subscription is disabled: 410 Gone", cause="disabled"
    )
    await app.state.feed([run, *run_events(run, [RunStatus.SUCCESS], deliveries=2), ended])
    done = hookrun("runs", "show", run.run_id)
    assert done.exit_code == 0, done.output
    rows = {
        line.split()[0]: line.rstrip()
        for line in done.output.splitlines()
        if line.lstrip().startswith("sub-")
    }
    assert " exhausted " in rows["sub-1"] and rows["sub-1"].endswith(" 500")
    assert " canceled " in rows["sub-2"]
    assert rows["sub-2"].endswith(" the subscription is disabled: 410 Gone")


async def test_show_gives_a_runs_times_in_the_order_they_happened(api, app):  # noqa: F811
    run = launched("tok")
    await app.state.feed([run, *run_events(run, [RunStatus.SUCCESS])])
    done = hookrun("runs", "show", run.run_id)
    assert done.exit_code == 0, done.output
    times = {}
    for line in done.output.splitlines():
        name, _, value = line.strip().partition(" ")
        if name in ("received", "completed"):
            times[name] = value.strip()
    # the test's run as the gateway and runner make one: received, then completed 3.1 s later
    assert times["received"] < times["completed"], done.output
