"""The ``hookrun`` command: its options, and one function per command."""

from __future__ import annotations

import asyncio
import functools
import os
import re
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click
import orjson
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.text import Text

from hookrun.cli import output
from hookrun.cli.api import Api, CliError
from hookrun.cli.inputs import UsageError, parse_header, parse_since, read_data

if TYPE_CHECKING:
    from hookrun.config import HookrunConfig, Trigger

DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_CONFIG = "examples/hookrun.yaml"

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Options:
    """The settings every command may use (``HOOKRUN_URL``, ...), and ``--json``."""

    url: str = DEFAULT_URL
    token: str | None = None
    config: str = DEFAULT_CONFIG
    json: bool = False

    def api(self) -> Api:
        return Api(self.url, self.token)


def _stdout() -> Console:
    # Not a terminal (a pipe, a file): wide enough that no table cuts an id or a reason.
    width = None if sys.stdout.isatty() else 200
    return Console(highlight=False, soft_wrap=True, width=width)


def _stderr() -> Console:
    return Console(stderr=True, highlight=False, soft_wrap=True)


def options(*, url: bool = False, token: bool = False, config: bool = False) -> Callable[[F], F]:
    """Give a command ``--json`` and the settings it uses; it then gets them as ``opts``.

    Errors a command raises (CliError, UsageError) become one line on stderr (and
    ``{"error": ...}`` on stdout with ``--json``) and a non-zero exit status.
    """

    def decorate(command: F) -> F:
        @functools.wraps(command)
        def run(**kwargs: Any) -> Any:
            opts = Options(
                url=kwargs.pop("url", None) or DEFAULT_URL,
                token=kwargs.pop("token", None) or None,
                config=kwargs.pop("config_path", None) or DEFAULT_CONFIG,
                json=kwargs.pop("as_json"),
            )
            try:
                return command(opts, **kwargs)
            except (CliError, UsageError) as exc:
                message = exc.message if isinstance(exc, CliError) else str(exc)
                code = exc.exit_code if isinstance(exc, CliError) else 2
                if opts.json:
                    click.echo(output.json_line({"error": message}))
                _stderr().print(Text(f"hookrun: {message}", style="red"))
                sys.exit(code)

        wrapped: Any = click.option(
            "--json", "as_json", is_flag=True, help="Print machine-readable JSON."
        )(run)
        if config:
            wrapped = click.option(
                "--config",
                "config_path",
                envvar="HOOKRUN_CONFIG",
                metavar="FILE",
                help=f"The config file  [env HOOKRUN_CONFIG; default {DEFAULT_CONFIG}]",
            )(wrapped)
        if token:
            wrapped = click.option(
                "--token",
                envvar="HOOKRUN_ADMIN_TOKEN",
                metavar="TOKEN",
                help="The admin API's bearer token  [env HOOKRUN_ADMIN_TOKEN]",
            )(wrapped)
        if url:
            wrapped = click.option(
                "--url",
                envvar="HOOKRUN_URL",
                metavar="URL",
                help=f"hookrun's public base URL  [env HOOKRUN_URL; default {DEFAULT_URL}]",
            )(wrapped)
        result: F = wrapped
        return result

    return decorate


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
def cli() -> None:
    """hookrun: send signed webhooks, follow and steer runs, check and operate the system."""


def _load(path: str) -> HookrunConfig:
    # The config's models are imported by the commands that read a config only: they are most
    # of the command's start-up time, and `runs`, `events` ... never need them.
    from hookrun.config import ConfigError, load_config

    try:
        return load_config(path)
    except ConfigError as exc:
        raise CliError(f"invalid config\n{exc}") from None


def _trigger(config: HookrunConfig, trigger_id: str, path: str) -> Trigger:
    for trigger in config.triggers:
        if trigger.id == trigger_id:
            return trigger
    known = ", ".join(t.id for t in config.triggers) or "none"
    raise CliError(f"trigger {trigger_id!r} is not in {path} (its triggers: {known})")


def _example_payload(trigger: Trigger) -> bytes:
    """The first of the trigger's ``payload_schema.examples``, else ``{}``."""
    schema = trigger.payload_schema
    if isinstance(schema, dict) and isinstance(schema.get("examples"), list) and schema["examples"]:
        return orjson.dumps(schema["examples"][0])
    return b"{}"


_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _run_id_in(body: Any, text: str) -> str | None:
    """The run id in a launch's answer: ``run_id`` of a JSON object, else the one id in the text."""
    if isinstance(body, dict) and isinstance(body.get("run_id"), str):
        return str(body["run_id"])
    found = set(_UUID.findall(text))
    return found.pop() if len(found) == 1 else None


@cli.command()
@click.argument("trigger")
@click.option(
    "--data",
    "-d",
    metavar="JSON|@FILE",
    help="The body: JSON, or @FILE (@- for stdin)  [default: the first of the trigger's"
    " payload_schema examples, else {}]",
)
@click.option(
    "--header",
    "-H",
    multiple=True,
    metavar="'K: V'",
    help="An extra header (repeat); it wins over one the signer would add (to send a wrong"
    " signature, say).",
)
@click.option(
    "--private-key",
    type=click.Path(exists=True, dir_okay=False),
    help="PEM private key, for conditions whose config holds only a public key.",
)
@options(url=True, config=True)
def send(
    opts: Options, trigger: str, data: str | None, header: tuple[str, ...], private_key: str | None
) -> None:
    """Launch TRIGGER, signed as its conditions in the config require.

    Exit status 0 when the gateway answers 2xx.
    """
    from hookrun.config.signing import OutgoingRequest, SigningError, SigningOptions, sign_request

    config = _load(opts.config)
    found = _trigger(config, trigger, opts.config)
    body = read_data(data) if data is not None else _example_payload(found)
    # Lower-case names: header names are case-insensitive, and the signers keep a given
    # webhook-id (setdefault) only when they see it under its lower-case name.
    given = {name.lower(): value for name, value in map(parse_header, header)}
    headers = dict(given)
    if "content-type" not in headers:
        try:
            orjson.loads(body)
            headers["Content-Type"] = "application/json"
        except orjson.JSONDecodeError:
            headers["Content-Type"] = "application/octet-stream"
    key = Path(private_key).read_bytes() if private_key else None
    try:
        signed = sign_request(
            found, OutgoingRequest(body, headers), SigningOptions(now=time.time(), private_key=key)
        )
    except SigningError as exc:
        hint = ""
        if key is None and "private key" in str(exc):
            hint = "; pass it with --private-key FILE"
        raise CliError(f"cannot sign for trigger {trigger!r}: {exc}{hint}") from None
    signed.headers = {
        **{k: v for k, v in signed.headers.items() if k.lower() not in given},
        **given,
    }
    api = opts.api()
    try:
        response = api.send(
            "POST",
            f"/api/v0/launch/{found.id}/",
            content=signed.body,
            headers=signed.headers,
            params=signed.query,
        )
    finally:
        api.close()
    try:
        answer: Any = response.json()
    except ValueError:
        answer = response.text
    run_id = _run_id_in(answer, response.text)
    ok = response.is_success
    if opts.json:
        click.echo(
            output.json_text(
                {"status_code": response.status_code, "ok": ok, "run_id": run_id, "body": answer}
            )
        )
    elif ok:
        shown = answer if isinstance(answer, str) else output.json_line(answer)
        _stdout().print(Text(f"{response.status_code} ", style="green") + Text(shown))
    if not ok:
        hint = f" (why: hookrun triggers log {found.id})" if response.status_code == 400 else ""
        raise CliError(f"{opts.url} answered {response.status_code}: {response.text[:200]}{hint}")


@cli.group()
def runs() -> None:
    """List, show, follow, cancel, replay and redeliver runs (the admin API)."""


@runs.command("list")
@click.option("--trigger", metavar="ID", help="Only this trigger's runs.")
@click.option(
    "--status",
    metavar="STATUS",
    help="SUCCESS, FAILURE, TIMED_OUT, CANCELED, ... or pending, completed, error",
)
@click.option("--since", metavar="TIME", help="Received since: 15m, 2h, 7d or an RFC 3339 time.")
@click.option("--limit", type=click.IntRange(1, 500), default=20, show_default=True)
@click.option("--cursor", metavar="CURSOR", help="The next page (printed after a full page).")
@options(url=True, token=True)
def list_runs(
    opts: Options,
    trigger: str | None,
    status: str | None,
    since: str | None,
    limit: int,
    cursor: str | None,
) -> None:
    """The newest runs first."""
    params: dict[str, str | int] = {"limit": limit}
    for name, value in (("trigger_id", trigger), ("status", status), ("cursor", cursor)):
        if value:
            params[name] = value
    if since:
        params["since"] = parse_since(since)
    page = _admin(opts, "GET", "/runs", params=params)
    if opts.json:
        click.echo(output.json_text(page))
        return
    console = _stdout()
    if not page["runs"]:
        console.print("no runs")
        return
    console.print(output.runs_table(page["runs"]))
    if page.get("next_cursor"):
        console.print(Text(f"more: --cursor {page['next_cursor']}", style="dim"))


def _admin(opts: Options, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
    api = opts.api()
    try:
        return api.admin(method, path, **kwargs)
    finally:
        api.close()


@runs.command("show")
@click.argument("run_id")
@options(url=True, token=True)
def show_run(opts: Options, run_id: str) -> None:
    """A run: its status, executions (exit code, duration, log tail), pipelines, deliveries."""
    run = _admin(opts, "GET", f"/runs/{run_id}", what=f"run {run_id}")
    if opts.json:
        click.echo(output.json_text(run))
    else:
        output.print_run(_stdout(), run)


def _changes(api: Api, trigger: str | None, after: str | None) -> Iterator[dict[str, Any]]:
    """Runs as they change, from the status service's live feed, after the position ``after``
    (None: from now); reconnects where it left."""
    params = {"trigger_id": trigger} if trigger else {}
    last_id = after
    while True:
        for event in api.stream("/runs/stream", params, last_id):
            last_id = event.id or last_id
            if event.event == "run":
                yield orjson.loads(event.data)


@runs.command("watch")
@click.option("--trigger", metavar="ID", help="Only this trigger's runs.")
@click.option(
    "--limit",
    type=click.IntRange(0, 500),
    default=10,
    show_default=True,
    help="Recent runs shown first.",
)
@options(url=True, token=True)
def watch_runs(opts: Options, trigger: str | None, limit: int) -> None:
    """Follow runs live, one line per change, until Ctrl-C (--json: one object per line)."""
    api = opts.api()
    console = _stdout()

    def show(run: dict[str, Any]) -> None:
        if opts.json:
            # flushed line by line: a pipe (jq, a test) sees each change as it happens
            click.echo(output.json_line(run))
            sys.stdout.flush()
            return
        line = Text(output.short_time(run.get("completed_at") or run["received_at"]) + "  ")
        line += Text(f"{run['run_id']}  {run['trigger_id']}  ")
        line += output.status_text(run["status"], run["info_status"])
        if run.get("duration_ms") is not None:
            line += Text(f"  {output.duration(run['duration_ms'])}")
        console.print(line)
        console.file.flush()

    try:
        # The recent runs first, then every change from where that list was read: one stored
        # in between is shown too.
        after: str | None = None
        if limit:
            params: dict[str, str | int] = {"limit": limit}
            if trigger:
                params["trigger_id"] = trigger
            page = api.admin("GET", "/runs", params=params)
            after = page.get("position")
            for run in reversed(page["runs"]):
                show(run)
        for run in _changes(api, trigger, after):
            show(run)
    except KeyboardInterrupt:
        pass
    finally:
        api.close()


@runs.command("cancel")
@click.argument("run_id")
@click.option("--reason", default="", help="Recorded with the cancel request.")
@options(url=True, token=True)
def cancel_run(opts: Options, run_id: str, reason: str) -> None:
    """Cancel a run that has not finished."""
    answer = _admin(
        opts, "POST", f"/runs/{run_id}/cancel", json={"reason": reason}, what=f"run {run_id}"
    )
    if opts.json:
        click.echo(output.json_text(answer))
    else:
        _stdout().print(f"cancel requested for run {run_id}")


@runs.command("replay")
@click.argument("run_id")
@click.option(
    "--data", "-d", metavar="JSON|@FILE", help="A new payload (JSON) instead of the run's."
)
@options(url=True, token=True)
def replay_run(opts: Options, run_id: str, data: str | None) -> None:
    """Start a new run of the run's trigger (conditions skipped); prints the new run id."""
    body: dict[str, Any] = {}
    if data is not None:
        raw = read_data(data)
        try:
            body["payload"] = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise UsageError(f"--data: the payload must be JSON ({exc})") from None
    answer = _admin(opts, "POST", f"/runs/{run_id}/replay", json=body, what=f"run {run_id}")
    if opts.json:
        click.echo(output.json_text(answer))
    else:
        click.echo(answer["run_id"])


@runs.command("redeliver")
@click.argument("run_id")
@click.option("--subscription", metavar="ID", help="Only to this subscription.")
@options(url=True, token=True)
def redeliver_run(opts: Options, run_id: str, subscription: str | None) -> None:
    """Send a finished run's notification again."""
    answer = _admin(
        opts,
        "POST",
        f"/runs/{run_id}/redeliver",
        json={"subscription_id": subscription} if subscription else {},
        what=f"run {run_id}",
    )
    if opts.json:
        click.echo(output.json_text(answer))
    else:
        _stdout().print(f"redelivery requested for run {run_id}")


@cli.group()
def triggers() -> None:
    """Triggers: their launch log."""


@triggers.command("log")
@click.argument("trigger")
@click.option("--limit", type=click.IntRange(1, 500), default=20, show_default=True)
@click.option("--cursor", metavar="CURSOR", help="The next page (printed after a full page).")
@options(url=True, token=True)
def trigger_log(opts: Options, trigger: str, limit: int, cursor: str | None) -> None:
    """Launches of TRIGGER, newest first: accepted, and refused with the reason."""
    params: dict[str, str | int] = {"limit": limit}
    if cursor:
        params["cursor"] = cursor
    page = _admin(opts, "GET", f"/triggers/{trigger}/log", params=params)
    if opts.json:
        click.echo(output.json_text(page))
        return
    console = _stdout()
    if not page["entries"]:
        console.print(f"no launches of trigger {trigger!r}")
        return
    console.print(output.log_table(page["entries"]))
    if page.get("next_cursor"):
        console.print(Text(f"more: --cursor {page['next_cursor']}", style="dim"))


@cli.command()
@click.argument("run_id", required=False)
@click.option(
    "--topic",
    metavar="NAME",
    help="Read this topic straight from Kafka instead (e.g. hookrun.runs.dlq; RUN_ID then"
    " filters by key)  [KAFKA_BOOTSTRAP_SERVERS]",
)
@options(url=True, token=True)
def events(opts: Options, run_id: str | None, topic: str | None) -> None:
    """A run's events as CloudEvents, oldest first (request bodies shown decoded)."""
    if topic is not None:
        found = _topic_events(topic, run_id)
    elif run_id is None:
        raise UsageError("give a RUN_ID, or --topic NAME to read a topic")
    else:
        found = _admin(opts, "GET", f"/runs/{run_id}/events", what=f"run {run_id}")["events"]
    if opts.json:
        click.echo(output.json_text({"run_id": run_id, "events": found}))
        return
    console = _stdout()
    for event in found:
        console.print(Text(f"# {event.get('type')}  {event.get('time')}", style="bold"))
        click.echo(output.json_text(output.readable_event(event)))
    if not found:
        console.print("no events")


def _topic_events(topic: str, key: str | None) -> list[dict[str, Any]]:
    """The records of ``topic`` (of ``key`` only, if given) as CloudEvents, read from Kafka."""
    from hookrun.dev.events import read_events

    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    try:
        records = asyncio.run(read_events(bootstrap, topic, key=key, timeout_s=0))
    except Exception as exc:
        raise CliError(f"kafka at {bootstrap}: {exc or type(exc).__name__}") from None
    out = []
    for record in records:
        doc: dict[str, Any] = {k[3:]: v for k, v in record.headers.items() if k.startswith("ce_")}
        doc["datacontenttype"] = record.headers.get("content-type")
        try:
            doc["data"] = orjson.loads(record.value)
        except orjson.JSONDecodeError:  # a dead letter may be anything
            doc["data"] = record.value.decode("utf-8", "replace")
        # where it is, and the headers that are not CloudEvents' (a dead letter's dlq_reason, ...)
        doc["kafka"] = {
            "topic": record.topic,
            "partition": record.partition,
            "offset": record.offset,
            "key": record.key,
            "headers": {
                k: v
                for k, v in record.headers.items()
                if not k.startswith("ce_") and k != "content-type"
            },
        }
        out.append(doc)
    return out


@cli.group("config")
def config_group() -> None:
    """The config file."""


@config_group.command("check")
@click.argument("file", required=False)
@options(config=True)
def check_config(opts: Options, file: str | None) -> None:
    """Validate FILE (default: HOOKRUN_CONFIG) as the services do at start-up."""
    from hookrun.config import ConfigError, load_config

    path = file or opts.config
    try:
        config = load_config(path)
    except ConfigError as exc:
        if opts.json:
            problems = [{"path": p.path, "reason": p.reason} for p in exc.problems]
            click.echo(output.json_text({"ok": False, "file": path, "problems": problems}))
        _stderr().print(Text(f"hookrun: invalid config\n{exc}", style="red"))
        sys.exit(1)
    trigger_ids = [t.id for t in config.triggers]
    summary = {
        "ok": True,
        "file": path,
        "config_version": config.config_version,
        "triggers": trigger_ids,
        "steps": len(config.steps),
        "pipelines": len(config.pipelines),
    }
    if opts.json:
        click.echo(output.json_text(summary))
        return
    _stdout().print(
        Text(f"{path}: valid", style="green")
        + Text(
            f" (config version {config.config_version}): {len(config.triggers)} triggers"
            f" ({', '.join(trigger_ids) or 'none'}), {len(config.steps)} steps,"
            f" {len(config.pipelines)} pipelines"
        )
    )


@cli.command()
@options()
def rebuild(opts: Options) -> None:
    """Rebuild the status store from the topics (stop the status service first with SQLite).

    The store, broker and namespace come from the status service's settings
    (HOOKRUN_DATABASE_URL, KAFKA_BOOTSTRAP_SERVERS, HOOKRUN_NAMESPACE, ...).
    """
    from hookrun.status.config import Settings, shown_url
    from hookrun.status.rebuild import rebuild as rebuild_store

    settings = Settings()
    started = time.monotonic()
    bar = Progress(
        TextColumn("rebuilding"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[counts]}"),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        console=_stderr(),
        disable=opts.json,
    )
    task = bar.add_task("rebuild", total=None, counts="", rate="")

    def progress(done: int, total: int) -> None:
        elapsed = max(time.monotonic() - started, 1e-6)
        bar.update(
            task,
            completed=done,
            total=total,
            counts=f"{done:,}/{total:,} events",
            rate=f"{done / elapsed:,.0f} events/s",
        )

    try:
        with bar:
            records = asyncio.run(rebuild_store(settings, progress))
    except Exception as exc:
        raise CliError(f"rebuild failed: {exc}") from None
    seconds = time.monotonic() - started
    summary = {
        "database": shown_url(settings.hookrun_database_url),
        "records": records,
        "seconds": round(seconds, 3),
        "events_per_s": round(records / seconds, 1) if seconds else None,
    }
    if opts.json:
        click.echo(output.json_text(summary))
    else:
        _stdout().print(
            f"rebuilt {summary['database']} from {records:,} events in {seconds:.1f} s"
            f" ({summary['events_per_s']:,} events/s)"
        )


@cli.command()
@click.argument("action", type=click.Choice(["create", "check"]))
@click.option(
    "--namespace",
    envvar="HOOKRUN_NAMESPACE",
    default="hookrun",
    show_default=True,
    help="Topic name prefix  [env HOOKRUN_NAMESPACE]",
)
@options()
def topics(opts: Options, action: str, namespace: str) -> None:
    """Create hookrun's topics (create), or report every missing or unsafe one (check).

    The broker is KAFKA_BOOTSTRAP_SERVERS (and KAFKA_* security), the layout
    HOOKRUN_TOPIC_REPLICATION_FACTOR and HOOKRUN_TOPIC_PARTITIONS. Exit status 1 when a topic is
    missing or unsafe.
    """
    from hookrun.events import topics as names
    from hookrun.events.admin import ensure_topics, unsafe_topics

    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")

    async def run() -> tuple[list[str], list[str]]:
        layout = names.Layout.from_env()
        created = []
        if action == "create":
            created = list(await ensure_topics(bootstrap, namespace=namespace, layout=layout))
        return created, [
            str(p) for p in await unsafe_topics(bootstrap, namespace=namespace, layout=layout)
        ]

    try:
        created, problems = asyncio.run(run())
    except ValueError as exc:  # a HOOKRUN_TOPIC_* setting
        raise CliError(str(exc), exit_code=2) from None
    except Exception as exc:
        raise CliError(f"kafka at {bootstrap}: {exc or type(exc).__name__}") from None
    if opts.json:
        click.echo(
            output.json_text(
                {
                    "namespace": namespace,
                    "created": created,
                    "problems": problems,
                    "ok": not problems,
                }
            )
        )
    else:
        console = _stdout()
        for name in created:
            console.print(f"created {name}")
        for problem in problems:
            console.print(Text(problem, style="red"))
        if not problems:
            console.print(
                Text(f"every topic of namespace {namespace!r} is there and safe", style="green")
            )
    if problems:
        sys.exit(1)


def main() -> None:
    """The console script's entry point."""
    cli(prog_name="hookrun")
