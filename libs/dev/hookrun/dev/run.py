"""`make run`: the broker (unless one is given), every service, the demo receiver; Ctrl-C stops all.

Prints the URLs and a ready-to-paste signed curl for the example trigger. Everything started
here is stopped here, by pid; a broker that was already running is left as it was.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import re
import shlex
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from hookrun.config import ConfigError, load_config
from hookrun.dev import kafka
from hookrun.dev.procs import ServiceProcess
from hookrun.events.kafka import ensure_topics, wait_for_group_coordination

DEMO_BODY = '{"batch_size": 16, "records": [{"id": 1}, {"id": 2}, {"id": 3}]}'


def _services(env: dict[str, str], logs: Path) -> list[ServiceProcess]:
    """The four services and the demo receiver; the HTTP ones are waited for until healthy."""
    port, status_port = env["HOOKRUN_PORT"], env["HOOKRUN_STATUS_PORT"]
    return [
        ServiceProcess(
            "status",
            "hookrun.status",
            env,
            logs,
            health_url=f"http://127.0.0.1:{status_port}/healthz",
        ),
        ServiceProcess("runner", "hookrun.runner", env, logs),
        ServiceProcess("notifier", "hookrun.notifier", env, logs),
        ServiceProcess("receiver", "hookrun.dev.receiver", env, logs),
        ServiceProcess(
            "gateway", "hookrun.gateway", env, logs, health_url=f"http://127.0.0.1:{port}/healthz"
        ),
    ]


@dataclass
class Restarts:
    """make run's restart policy for a service that exits on its own (a crash, an OOM kill).

    Like systemd's ``Restart=on-failure`` with a doubling delay: 1 s after the first exit, then
    2, 4, ... up to ``max_s``; a process that stayed up ``stable_s`` starts over at ``first_s``.
    Nothing is lost meanwhile: the gateway's clients get connection errors and retry, the
    consumers resume from their committed offsets.
    """

    first_s: float = 1.0
    max_s: float = 30.0
    stable_s: float = 60.0
    _delay: dict[str, float] = field(default_factory=dict, init=False, repr=False)

    def after_exit(self, name: str, up_s: float) -> float:
        """The delay before restarting ``name``, which ran for ``up_s`` seconds."""
        previous = self._delay.get(name)
        delay = self.first_s if previous is None or up_s >= self.stable_s else previous * 2
        self._delay[name] = delay = min(delay, self.max_s)
        return delay


def supervise(
    procs: list[ServiceProcess],
    running: Callable[[], bool],
    policy: Restarts,
    *,
    tick_s: float = 0.5,
) -> None:
    """Restart the processes that exit, per ``policy``, while ``running()`` holds."""
    started = {p.name: time.monotonic() for p in procs}
    due: dict[str, float] = {}
    while running():
        now = time.monotonic()
        for proc in procs:
            if proc.proc is not None and proc.proc.poll() is not None:
                delay = policy.after_exit(proc.name, now - started[proc.name])
                print(
                    f"!! {proc.name} exited ({proc.proc.returncode}); restarting in {delay:g} s."
                    f" Last lines of {proc.log_path}:\n{proc.tail(20)}",
                    flush=True,
                )
                proc.proc = None
                due[proc.name] = now + delay
            elif proc.proc is None and due.get(proc.name, float("inf")) <= now:
                del due[proc.name]
                proc.start(wait_s=0)  # not waited for: the others stay supervised meanwhile
                started[proc.name] = now
                print(f"   {proc.name:9} restarted, pid {proc.pid}", flush=True)
        time.sleep(tick_s)


#: A text log line (hookrun.events.logs.TEXT_FORMAT): time, level, service, then the rest.
_TEXT_LINE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (?P<level>[A-Z]+) \S+ (?P<rest>.*)")
_SHOWN_LEVELS = frozenset({"WARNING", "ERROR", "CRITICAL"})


class Echo:
    """Follows the services' log files and prints, like `docker compose up`, each line worth a
    person's attention with the service's name in front: the demo receiver's one line per
    notification, and every service's warnings and errors (with their tracebacks).

    The files stay the whole record; this reads them from where they ended when it started,
    across restarts of a service (its log is appended to).
    """

    def __init__(self, procs: list[ServiceProcess], out: TextIO = sys.stdout) -> None:
        self._procs = procs
        self._out = out
        self._offsets = {p.name: _size(p.log_path) for p in procs}
        self._partial = {p.name: b"" for p in procs}
        self._showing = {p.name: False for p in procs}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._follow, name="echo", daemon=True)
        self._width = max(len(p.name) for p in procs)

    def start(self) -> Echo:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.poll()

    def _follow(self) -> None:
        while not self._stop.wait(0.2):
            self.poll()

    def poll(self) -> None:
        """Print what the logs gained since the last call."""
        for proc in self._procs:
            try:
                with proc.log_path.open("rb") as log:
                    log.seek(self._offsets[proc.name])
                    chunk = log.read()
            except FileNotFoundError:
                continue
            self._offsets[proc.name] += len(chunk)
            *lines, self._partial[proc.name] = (self._partial[proc.name] + chunk).split(b"\n")
            for raw in lines:
                shown = self.shown(proc.name, raw.decode(errors="replace"))
                if shown is not None:
                    print(f"{proc.name:{self._width}} | {shown}", file=self._out, flush=True)

    def shown(self, name: str, line: str) -> str | None:
        """What to print of ``name``'s log ``line``, or None."""
        if name == "receiver":
            return line if line.startswith(("run ", "REJECTED ")) else None
        level, rest = _level_of(line)
        if level is None:  # a traceback or another continuation of the line before
            return line if self._showing[name] else None
        self._showing[name] = level in _SHOWN_LEVELS
        return f"{level} {rest}" if self._showing[name] else None


def _level_of(line: str) -> tuple[str | None, str]:
    """The level of a text or JSON log line and what follows it; None for anything else."""
    if line.startswith("{"):
        try:
            doc = json.loads(line)
        except ValueError:
            return None, line
        if isinstance(doc, dict) and isinstance(doc.get("level"), str):
            return doc["level"], f"{doc.get('logger', '')}: {doc.get('message', '')}"
        return None, line
    match = _TEXT_LINE.match(line)
    return (match["level"], match["rest"]) if match else (None, line)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _demo_curl(base: str, trigger_id: str, secret: str) -> str:
    sig = "sha256=" + hmac.new(secret.encode(), DEMO_BODY.encode(), hashlib.sha256).hexdigest()
    return (
        f"curl -sS -X POST {base}/api/v0/launch/{trigger_id}/ \\\n"
        f"  -H 'Content-Type: application/json' \\\n"
        f"  -H 'X-Hub-Signature-256: {sig}' \\\n"
        f"  --data {shlex.quote(DEMO_BODY)}"
    )


def main() -> int:
    config_path = Path(os.environ.get("HOOKRUN_CONFIG", "examples/hookrun.yaml")).resolve()
    try:
        load_config(config_path)
    except ConfigError as exc:
        print(f"invalid config\n{exc}", file=sys.stderr)
        return 2
    state = kafka.state_dir()
    logs = state / "logs"
    # A broker this starts is stopped when everything else has stopped; a running one stays.
    with kafka.broker(
        on_start=lambda: print("starting Kafka 3.9.1 (KRaft) on 127.0.0.1:9092 ...", flush=True)
    ) as bootstrap:
        _serve(config_path, state, logs, bootstrap)
    print("stopped everything started by make run.")
    return 0


async def prepare_broker(bootstrap: str, namespace: str) -> None:
    """hookrun's topics, and group coordination ready before any consumer joins: on a new
    broker the first consumers would print the coordinator's refusals into make run's terminal
    as ERRORs and warnings while ``__consumer_offsets`` is made and loaded."""
    await ensure_topics(bootstrap, namespace=namespace)
    await wait_for_group_coordination(bootstrap)


def _serve(config_path: Path, state: Path, logs: Path, bootstrap: str) -> None:
    """Start the services on ``bootstrap`` and supervise them until SIGINT/SIGTERM."""
    asyncio.run(prepare_broker(bootstrap, os.environ.get("HOOKRUN_NAMESPACE", "hookrun")))

    port = os.environ.get("HOOKRUN_PORT", "8000")
    env = {
        "HOOKRUN_CONFIG": str(config_path),
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "HOOKRUN_PORT": port,
        "HOOKRUN_STATUS_PORT": os.environ.get("HOOKRUN_STATUS_PORT", "8001"),
        "HOOKRUN_STATUS_URL": f"http://127.0.0.1:{os.environ.get('HOOKRUN_STATUS_PORT', '8001')}",
        "HOOKRUN_DATA_DIR": str(state / "data"),
        "HOOKRUN_DATABASE_URL": os.environ.get(
            "HOOKRUN_DATABASE_URL", f"sqlite:///{state / 'status.db'}"
        ),
        "HOOKRUN_ADMIN_TOKEN": os.environ.get("HOOKRUN_ADMIN_TOKEN", "dev-admin-token"),
        # /metrics, /healthz and /readyz of the consumers: one environment, a port for each.
        "HOOKRUN_RUNNER_HEALTH_PORT": os.environ.get("HOOKRUN_RUNNER_HEALTH_PORT", "9101"),
        "HOOKRUN_NOTIFIER_HEALTH_PORT": os.environ.get("HOOKRUN_NOTIFIER_HEALTH_PORT", "9102"),
    }
    procs = _services(env, logs)
    echo = Echo(procs).start()
    stop = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        for proc in procs:
            proc.start(wait_s=60)
            print(f"  {proc.name:9} pid {proc.pid}  log {proc.log_path}", flush=True)
        print(_banner(env, config_path, bootstrap), flush=True)
        supervise(procs, lambda: not stop, Restarts())
    finally:
        print("\nstopping ...", flush=True)
        for proc in reversed(procs):
            proc.stop()
        echo.stop()


def _banner(env: dict[str, str], config_path: Path, bootstrap: str) -> str:
    base = f"http://127.0.0.1:{env['HOOKRUN_PORT']}"
    token = env["HOOKRUN_ADMIN_TOKEN"]
    try:
        config = os.path.relpath(config_path)
    except ValueError:
        config = str(config_path)
    secret = os.environ.get("HOOKRUN_DEMO_SECRET", "demo-secret")
    consumers = "  ".join(
        f"http://127.0.0.1:{env[f'HOOKRUN_{name.upper()}_HEALTH_PORT']}/metrics ({name})"
        for name in ("runner", "notifier")
    )
    return (
        f"\nhookrun is up on Kafka {bootstrap}."
        f"\n\n  Dashboard  {base}/ui/   sign in with the admin token: {token}"
        f"\n  API        {base}   OpenAPI {base}/openapi.json   status {env['HOOKRUN_STATUS_URL']}"
        f"\n  Metrics    {base}/metrics  {env['HOOKRUN_STATUS_URL']}/metrics  {consumers}"
        "\n\nLaunch the example trigger from another terminal (the CLI signs it as the"
        " trigger's conditions require):"
        f"\n\n  export HOOKRUN_URL={base} HOOKRUN_ADMIN_TOKEN={token} HOOKRUN_CONFIG={config}"
        "\n  .venv/bin/hookrun send feature-extraction"
        "\n  .venv/bin/hookrun runs show <run id>"
        "\n\nor with curl, signed with the demo secret:"
        f"\n\n{_demo_curl(base, 'feature-extraction', secret)}"
        "\n\nFinished runs (from the demo receiver) and the services' warnings appear below."
        "\nCtrl-C stops everything started here.\n"
    )


if __name__ == "__main__":
    sys.exit(main())
