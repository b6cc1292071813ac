"""`hookrun runs watch` against the status service's admin API, in process."""

from __future__ import annotations

import orjson
from click.testing import CliRunner

from hookrun.cli import main
from hookrun.cli.api import Api
from hookrun.events import RunStatus
from tests.status.conftest import config, feed, store  # noqa: F401 (fixtures)
from tests.status.factories import launched, run_events
from tests.status.test_routes import TOKEN, app, client  # noqa: F401 (fixtures)


async def test_watch_shows_what_changed_between_its_list_and_its_feed(
    client,  # noqa: F811
    app,  # noqa: F811
    monkeypatch,
):
    run, later = launched("tok"), launched("tok")
    await app.state.feed([run])
    api = Api("http://testserver", TOKEN)
    api.http = client
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
    monkeypatch.setattr(main.Options, "api", lambda opts: api)
    done = CliRunner().invoke(main.cli, ["runs", "watch", "--json", "--token", TOKEN])
    assert done.exit_code == 0, done.output
    shown = [(r["run_id"], r["status"]) for r in map(orjson.loads, done.output.splitlines())]
    assert shown[0] == (run.run_id, None)  # the list
    assert set(shown[1:]) == {(run.run_id, "SUCCESS"), (later.run_id, None)}  # the feed
