"""Any `schedule` a config file may hold loads, or fails with a ConfigError naming its field."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import available_timezones

import yaml
from hypothesis import given
from hypothesis import strategies as st

from hookrun.config import ConfigError, parse_config
from tests.fuzz.strategies import fuzz

BASE = {
    "project": {"id": "p-1", "slug": "fuzz", "name": "Fuzz"},
    "organization": {"id": "o-1", "slug": "acme", "title": "Acme"},
    "environment": {"id": "e-1", "slug": "dev", "type": "DEVELOPMENT"},
    "steps": [{"name": "noop", "command": ["true"]}],
}

CRON_FIELD = st.one_of(
    st.sampled_from(
        ["*", "*/5", "0", "1-5", "MON", "MON-FRI", "JAN", "L", "?", "1,15", "60", "-1"]
    ),
    st.integers(min_value=-2, max_value=70).map(str),
    st.text(alphabet="0123456789*/,-LW#?", min_size=1, max_size=6),
)
#: Expressions built field by field from values cron admits (some combinations still name
#: no day, e.g. 31 FEB), beside arbitrary field lists and text.
LIKELY = st.tuples(
    st.sampled_from(["*", "*/5", "0", "15", "0-30/10", "59"]),
    st.sampled_from(["*", "9", "*/2", "8-17", "23"]),
    st.sampled_from(["*", "1", "15", "31", "L", "1-7"]),
    st.sampled_from(["*", "JAN", "2", "1-6", "DEC"]),
    st.sampled_from(["*", "MON", "MON-FRI", "0", "6", "SUN"]),
).map(" ".join)
CRON = st.one_of(
    LIKELY,
    st.tuples(LIKELY, st.sampled_from(["*", "*/10", "0", "30"])).map(" ".join),
    st.lists(CRON_FIELD, min_size=1, max_size=7).map(" ".join),
    st.text(max_size=30),
)
ZONE = st.one_of(
    st.sampled_from(sorted(available_timezones())),
    st.sampled_from(["UTC", "Europe/Helsinki", "Mars/Olympus", "../etc/passwd", "", " UTC"]),
    st.text(max_size=30),
)
GRACE = st.one_of(st.integers(min_value=-10, max_value=10**6), st.text(max_size=5), st.none())


@fuzz(400)
@given(cron=CRON, zone=ZONE, grace=GRACE)
def test_a_schedule_loads_or_names_its_bad_field(cron: str, zone: str, grace: object) -> None:
    schedule: dict[str, object] = {"cron": cron, "timezone": zone}
    if grace is not None:
        schedule["misfire_grace_s"] = grace
    trigger = {
        "id": "t",
        "title": "t",
        "actions": [{"action": "run_execution", "step": "noop"}],
        "schedule": schedule,
    }
    text = yaml.safe_dump({**BASE, "triggers": [trigger]})
    try:
        config = parse_config(text, "fuzz.yaml")
    except ConfigError as exc:
        lines = str(exc).splitlines()
        assert lines and all(line.startswith("fuzz.yaml: triggers[0].schedule") for line in lines)
        return
    loaded = config.triggers[0].schedule
    assert loaded is not None
    # A schedule that loads yields due times: after any moment, and in order.
    now = datetime(2026, 12, 6, 9, 30, tzinfo=UTC)
    nxt = loaded.next_after(now)
    assert nxt > now and nxt.tzinfo is not None
    assert loaded.last_at_or_before(nxt) == nxt
    assert loaded.next_after(nxt) > nxt
    assert nxt - now <= timedelta(days=366 * 30)
