"""`make run`'s terminal: finished runs and every service's warnings, named, like compose."""

from __future__ import annotations

import io
import os
import subprocess
from pathlib import Path

from hookrun.dev.procs import ServiceProcess
from hookrun.dev.run import Echo
from tests.e2e.support import REPO


def _procs(tmp_path: Path) -> list[ServiceProcess]:
    return [ServiceProcess(name, "unused", {}, tmp_path) for name in ("gateway", "receiver")]


def test_echo_shows_runs_warnings_and_their_tracebacks_but_not_info(tmp_path: Path) -> None:
    gateway, receiver = tmp_path / "gateway.log", tmp_path / "receiver.log"
    gateway.write_text("2026-12-06 04:00:00,000 WARNING gateway old: before make run\n")
    out = io.StringIO()
    echo = Echo(_procs(tmp_path), out)
    with gateway.open("a") as log:
        log.write(
            "2026-12-06 04:00:01,000 INFO gateway hookrun.gateway: accepted launch\n"
            "2026-12-06 04:00:02,000 WARNING gateway hookrun.events.topics: unsafe topic: x\n"
            "2026-12-06 04:00:03,000 ERROR gateway hookrun.gateway: launch failed\n"
            "Traceback (most recent call last):\n"
            '  File "x.py", line 1\n'
            "2026-12-06 04:00:04,000 INFO gateway hookrun.gateway: recovered\n"
            '  File "not a traceback of a shown line"\n'
            '{"time":"t","level":"ERROR","service":"gateway","logger":"g","message":"as json"}\n'
            "2026-12-06 04:00:05,000 WARNING gateway hookrun.gateway: half a li"
        )
    receiver.write_text(
        "demo receiver listening on http://127.0.0.1:8090/hooks\n"
        "run 5c1d SUCCESS in 83 ms, signature verified (webhook-id msg_1)\n"
        '{\n  "id": "5c1d"\n}\n'
        "REJECTED /hooks: signature did not verify\n"
    )
    echo.poll()
    with gateway.open("a") as log:
        log.write("ne, finished later\n")
    echo.poll()
    assert out.getvalue().splitlines() == [
        "gateway  | WARNING hookrun.events.topics: unsafe topic: x",
        "gateway  | ERROR hookrun.gateway: launch failed",
        "gateway  | Traceback (most recent call last):",
        'gateway  |   File "x.py", line 1',
        "gateway  | ERROR g: as json",
        "receiver | run 5c1d SUCCESS in 83 ms, signature verified (webhook-id msg_1)",
        "receiver | REJECTED /hooks: signature did not verify",
        "gateway  | WARNING hookrun.gateway: half a line, finished later",
    ]


def test_make_run_needs_neither_java_nor_maven_when_a_broker_is_named() -> None:
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": "broker.example:9092"}
    named = subprocess.run(
        ["make", "-n", "run"], cwd=REPO, env=env, capture_output=True, text=True, check=True
    )
    assert "hookrun.dev.run" in named.stdout
    assert "kafka fetch" not in named.stdout
    env.pop("KAFKA_BOOTSTRAP_SERVERS")
    unnamed = subprocess.run(
        ["make", "-n", "run"], cwd=REPO, env=env, capture_output=True, text=True, check=True
    )
    assert "kafka fetch" in unnamed.stdout
