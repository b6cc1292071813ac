"""What the CLI prints: JSON for machines (``--json``), rich tables and colour for people."""

from __future__ import annotations

import base64
import copy
from collections.abc import Sequence
from typing import Any

import orjson
from rich.console import Console
from rich.table import Table
from rich.text import Text

#: Run statuses (and run-info statuses while a run has none), launch outcomes and delivery
#: states -> rich style.
STATUS_STYLES = {
    "SUCCESS": "green",
    "FAILURE": "red",
    "TIMED_OUT": "red",
    "ABORTED": "red",
    "UNRESOLVED_AUTH": "red",
    "INVALID_PAYLOAD": "red",
    "CANCELED": "yellow",
    "pending": "cyan",
    # a delivery's state
    "succeeded": "green",
    "failed": "red",
    "refused": "red",
    "gone": "red",
    "exhausted": "red",
    "canceled": "yellow",
    "retrying": "cyan",
    "accepted": "green",
    "rejected": "red",
    "duplicate": "yellow",
    "filtered": "yellow",
    "rate_limited": "yellow",
}


def json_text(value: Any) -> str:
    """``value`` as indented JSON text (orjson: UUIDs, datetimes and non-str keys allowed)."""
    return orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS).decode()


def json_line(value: Any) -> str:
    """``value`` as one line of JSON (for streams: one object per line)."""
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()


def status_text(status: str | None, info_status: str | None = None) -> Text:
    """A run's status, coloured; a run without one yet shows its run-info status."""
    shown = status or info_status or "-"
    return Text(shown, style=STATUS_STYLES.get(shown, ""))


def duration(ms: int | None) -> str:
    """``83 ms``, ``1.4 s``, ``2 min 5 s``; ``-`` when unknown."""
    if ms is None:
        return "-"
    if ms < 1000:
        return f"{ms} ms"
    if ms < 60_000:
        return f"{ms / 1000:.1f} s"
    minutes, seconds = divmod(ms // 1000, 60)
    return f"{minutes} min {seconds} s"


def short_time(value: str | None) -> str:
    """A stored UTC time as ``2026-12-06 04:10:12``; ``-`` when absent."""
    if not value:
        return "-"
    return value.replace("T", " ")[:19]


#: Columns kept whole however narrow the terminal (ids are copied from them); the free-text
#: columns (_WRAPS) wrap first.
_WHOLE = {
    "RUN": 36,
    "STATUS": 15,
    "EXECUTION": 36,
    "PIPELINE": 36,
    "RECEIVED (UTC)": 19,
    "AT (UTC)": 19,
}
_WRAPS = {"REASON", "URL", ""}


def table(columns: Sequence[str], rows: Sequence[Sequence[Any]], title: str | None = None) -> Table:
    out = Table(title=title, title_justify="left", box=None, header_style="bold")
    for name in columns:
        width = _WHOLE.get(name)
        out.add_column(name, no_wrap=name not in _WRAPS, min_width=width)
    for row in rows:
        out.add_row(*(cell if isinstance(cell, Text) else str(cell) for cell in row))
    return out


def runs_table(runs: Sequence[dict[str, Any]]) -> Table:
    return table(
        ["RUN", "TRIGGER", "STATUS", "RECEIVED (UTC)", "DURATION", "TEST"],
        [
            [
                r["run_id"],
                r["trigger_id"],
                status_text(r["status"], r["info_status"]),
                short_time(r["received_at"]),
                duration(r["duration_ms"]),
                "test" if r.get("is_test") else "",
            ]
            for r in runs
        ],
    )


def delivery_reason(delivery: dict[str, Any]) -> str:
    """Why a delivery is in its state: the reason it ended canceled or exhausted, when a retry
    is due, or the last attempt's error; empty for one that succeeded."""
    state, attempts = delivery["state"], delivery.get("attempts") or []
    last = (attempts[-1].get("error") if attempts else None) or ""
    if state in ("canceled", "exhausted"):
        return str(delivery.get("last_error") or last)
    if state == "retrying" and delivery.get("next_attempt_at"):
        due = f"next attempt at {short_time(delivery['next_attempt_at'])}"
        return f"{due}; last: {last}" if last else due
    return "" if state == "succeeded" else last


def print_run(console: Console, run: dict[str, Any]) -> None:
    """A run's detail: its fields, then executions, pipelines and deliveries as tables."""
    fields = [
        ("run", run["run_id"]),
        ("trigger", run["trigger_id"]),
        ("status", status_text(run["status"], run["info_status"])),
        ("received", short_time(run["received_at"])),
        ("completed", short_time(run["completed_at"])),
        ("duration", duration(run["duration_ms"])),
        ("config version", run.get("config_version") or "-"),
    ]
    optional = [
        ("test launch", "yes" if run.get("is_test") else None),
        ("account", run.get("account")),
        ("delivery id", run.get("delivery_id")),
        ("error", run.get("error")),
        ("replay of", run.get("replay_of")),
        ("replays", ", ".join(run.get("replays") or []) or None),
        ("cancel requested", short_time(run.get("cancel_requested_at")) or None),
    ]
    fields += [(name, value) for name, value in optional if value and value != "-"]
    console.print(table(["", ""], [[Text(k, style="bold"), v] for k, v in fields]))
    if run.get("executions"):
        console.print()
        console.print(
            table(
                ["EXECUTION", "STEP", "STATUS", "EXIT", "DURATION", "ATTEMPT"],
                [
                    [
                        x["execution_id"],
                        x["step"] if not x.get("node") else f"{x['node']} ({x['step']})",
                        status_text(x["status"]),
                        "-" if x["exit_code"] is None else x["exit_code"],
                        duration(x["duration_ms"]),
                        x.get("attempt", 1),
                    ]
                    for x in run["executions"]
                ],
                title="Executions",
            )
        )
        for x in run["executions"]:
            tail = (x.get("log_tail") or {}).get("stderr") or ""
            if tail and x["status"] != "SUCCESS":
                console.print(Text(f"stderr of {x['execution_id']}:", style="bold"))
                console.print(Text(tail.rstrip()[-2000:], style="dim"))
    if run.get("pipelines"):
        console.print()
        console.print(
            table(
                ["PIPELINE", "NAME", "STATUS", "NODES"],
                [
                    [p["pipeline_id"], p["name"], status_text(p["status"]), len(p["nodes"] or [])]
                    for p in run["pipelines"]
                ],
                title="Pipelines",
            )
        )
    if run.get("deliveries"):
        console.print()
        console.print(
            table(
                [
                    "SUBSCRIPTION",
                    "URL",
                    "STATE",
                    "ATTEMPTS",
                    "LAST STATUS",
                    "LAST ATTEMPT",
                    "REASON",
                ],
                [
                    [
                        d["subscription_id"],
                        d["url"] or "-",
                        status_text(d["state"]),
                        d["attempt_count"],
                        d["last_status_code"] or "-",
                        Text(short_time(d["last_attempt_at"]), no_wrap=True),
                        delivery_reason(d),
                    ]
                    for d in run["deliveries"]
                ],
                title="Deliveries",
            )
        )


def log_table(entries: Sequence[dict[str, Any]]) -> Table:
    return table(
        ["AT (UTC)", "OUTCOME", "STATUS", "RUN", "REASON", "COUNT"],
        [
            [
                short_time(e["at"]),
                status_text(e["outcome"]),
                e.get("status_code") or "-",
                e.get("run_id") or "-",
                e.get("reason") or "",
                e.get("count", 1),
            ]
            for e in entries
        ],
    )


def readable_event(event: dict[str, Any]) -> dict[str, Any]:
    """A CloudEvent with TriggerLaunched's base64 request body also shown decoded."""
    data = event.get("data")
    request = data.get("request") if isinstance(data, dict) else None
    if not isinstance(request, dict) or not isinstance(request.get("body_b64"), str):
        return event
    shown = copy.deepcopy(event)
    body = base64.b64decode(request["body_b64"]).decode("utf-8", "replace")
    shown["data"]["request"]["body (decoded)"] = body
    return shown
