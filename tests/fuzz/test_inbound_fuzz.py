"""Hostile config and requests for filters, rate limits and JWT conditions.

Properties: any `filter`, `rate_limit` or `jwt` condition written in a config either loads or is
a ConfigError naming the trigger's field (never another exception, never the secret in the
message); a filter that loaded never raises on any request; a launch through the gateway is
never a 5xx and ends in exactly one of: 202 with one TriggerLaunched, 400 rejected, 200
filtered or 429 rate-limited with one trigger-log entry of that outcome.
"""

from __future__ import annotations

import time
from typing import Any

import jwt
import orjson
import pytest
import yaml
from fastapi.testclient import TestClient
from hypothesis import event, given
from hypothesis import strategies as st

from hookrun.config import ConfigError, InboundRequest, parse_config
from hookrun.config.filters import filter_miss
from hookrun.events import TriggerLaunched, TriggerLogged
from hookrun.gateway.adapters import FakeDeliveryIndex, FakeEventLog
from hookrun.gateway.app import build
from hookrun.gateway.config import Settings
from tests.fuzz.strategies import bodies, fuzz, header_value, json_value

SECRET = "fuzz-jwt-secret-that-is-long-enough-for-hs256"
HEAD = {
    "project": {"id": "p-1", "slug": "fuzz", "name": "Fuzz"},
    "organization": {"id": "o-1", "slug": "acme", "title": "Acme"},
    "environment": {"id": "e-1", "slug": "dev", "type": "DEVELOPMENT"},
    "steps": [{"name": "noop", "command": ["true"]}],
}

paths = st.one_of(
    st.sampled_from(["payload.ref", "payload.a.b[0]", "headers.x-event", "payload.draft"]),
    st.text(max_size=20),
    st.text(max_size=10).map(lambda t: "payload." + t),
    st.text(max_size=10).map(lambda t: "headers." + t),
)
regexes = st.one_of(
    st.sampled_from(["^ci-", "(", "[a-", "a{2,1}", ".*", "(?P<x>a)"]), st.text(max_size=8)
)
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1), st.text(max_size=10)
)


def rules(depth: int = 2) -> st.SearchStrategy[Any]:
    leaf = st.fixed_dictionaries(
        {"path": paths},
        optional={
            "equals": scalars,
            "in": st.lists(scalars, max_size=3),
            "matches": regexes,
            "exists": st.one_of(st.booleans(), scalars),
            "extra": scalars,
        },
    )
    if depth == 0:
        return leaf
    inner = rules(depth - 1)
    return st.one_of(
        leaf,
        st.fixed_dictionaries({"all": st.lists(inner, max_size=3)}),
        st.fixed_dictionaries({"any": st.lists(inner, max_size=3)}),
        st.fixed_dictionaries({"not": st.one_of(inner, st.lists(inner, max_size=2))}),
        st.fixed_dictionaries({}, optional={"path": paths, "all": st.lists(inner, max_size=2)}),
    )


jwt_conditions = st.fixed_dictionaries(
    {"type": st.just("jwt")},
    optional={
        "algorithms": st.lists(
            st.sampled_from(["HS256", "HS384", "HS512", "RS256", "ES256", "EdDSA", "none"]),
            max_size=3,
        ),
        "secret": st.one_of(st.just(SECRET), st.text(max_size=40)),
        "public_key": st.text(max_size=40),
        "public_key_file": st.text(max_size=20),
        "jwks_file": st.text(max_size=20),
        "header": st.text(max_size=10),
        "query": st.text(max_size=10),
        "cookie": st.text(max_size=10),
        "issuer": scalars,
        "audience": st.one_of(scalars, st.lists(st.text(max_size=5), max_size=2)),
        "leeway_s": st.one_of(st.integers(-5, 100), st.floats(allow_nan=False)),
    },
)
rate_limits = st.one_of(
    st.fixed_dictionaries(
        {},
        optional={
            "launches": st.one_of(st.integers(-2, 1000), scalars),
            "per_s": st.one_of(st.floats(allow_nan=False), scalars),
            "burst": st.one_of(st.integers(-2, 100), scalars),
        },
    ),
    scalars,
)


def config_text(trigger: dict[str, Any]) -> str:
    base = {"id": "t", "title": "T", "actions": [{"action": "run_execution", "step": "noop"}]}
    return yaml.safe_dump(HEAD | {"triggers": [base | trigger]})


def loads_or_names_the_field(trigger: dict[str, Any], field: str) -> Any:
    try:
        return parse_config(config_text(trigger), "fuzz.yaml").triggers[0]
    except ConfigError as exc:
        assert all(p.path.startswith(f"triggers[0].{field}") for p in exc.problems), exc
        assert SECRET not in str(exc)
        return None


@fuzz(600)
@given(
    rule=st.one_of(rules(), st.lists(rules(), max_size=3)),
    body=bodies,
    event=header_value,
)
def test_any_filter_loads_or_names_its_field_and_never_raises_on_a_request(rule, body, event):
    trigger = loads_or_names_the_field({"filter": rule}, "filter")
    if trigger is None:
        return
    headers = {"x-event": event}
    if body.content_type is not None:
        headers["content-type"] = body.content_type
    miss = filter_miss(trigger, InboundRequest("POST", "/", headers, body=body.data))
    assert miss is None or miss.startswith("filter[")


@fuzz(400)
@given(condition=jwt_conditions)
def test_any_jwt_condition_loads_or_names_its_field(condition):
    loads_or_names_the_field({"conditions": [condition]}, "conditions[0]")


@fuzz(300)
@given(limit=rate_limits)
def test_any_rate_limit_loads_or_names_its_field(limit):
    trigger = loads_or_names_the_field({"rate_limit": limit}, "rate_limit")
    if trigger is not None and trigger.rate_limit is not None:
        assert trigger.rate_limit.capacity >= 1 and trigger.rate_limit.per_second > 0


GUARDED = config_text(
    {
        "conditions": [{"type": "jwt", "secret": SECRET, "algorithms": ["HS256"], "issuer": "ci"}],
        "filter": [
            {"path": "payload.ref", "equals": "refs/heads/main"},
            {"not": {"path": "headers.x-skip", "exists": True}},
        ],
        "rate_limit": {"launches": 5, "per_s": 3600, "burst": 3},
        "response": {"json": {"run_id": "{run_id}"}},
    }
)


@pytest.fixture(scope="module")
def guarded():
    log = FakeEventLog()
    app = build(
        Settings(hookrun_rejection_log_limit=10**9),
        parse_config(GUARDED, "fuzz.yaml"),
        event_log=log,
        deliveries=FakeDeliveryIndex(),
    )
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client, log


claims = st.fixed_dictionaries(
    {},
    optional={
        "sub": st.one_of(st.text(max_size=10), st.integers()),
        "iss": st.sampled_from(["ci", "other", ""]),
        "exp": st.one_of(st.integers(-10, 10).map(lambda d: int(time.time()) + d * 60), scalars),
        "nbf": st.integers(-10, 10).map(lambda d: int(time.time()) + d * 60),
        "extra": json_value,
    },
)
#: Tokens that pass the condition: the accepted, filtered and rate-limited paths need them.
good_tokens = st.fixed_dictionaries(
    {"sub": st.text(max_size=10), "iss": st.just("ci")},
    optional={"extra": json_value},
).map(lambda c: jwt.encode(c | {"exp": int(time.time()) + 600}, SECRET, algorithm="HS256"))
tokens = st.one_of(
    good_tokens,
    good_tokens,
    st.tuples(claims, st.sampled_from([SECRET, "wrong-secret-of-sufficient-length-xxxxx"])).map(
        lambda t: jwt.encode(t[0], t[1], algorithm="HS256")
    ),
    header_value,
)


@fuzz(800)
@given(
    token=tokens,
    scheme=st.sampled_from(["Bearer ", "Bearer ", "bearer ", "", "Basic "]),
    ref=st.one_of(st.just("refs/heads/main"), st.just("refs/heads/main"), scalars),
    skip=st.booleans(),
    refill=st.booleans(),
)
def test_a_guarded_launch_ends_in_exactly_one_outcome(guarded, token, scheme, ref, skip, refill):
    client, log = guarded
    log.events.clear()
    if refill:
        client.app.state.deps.buckets["t"].tokens = 3.0
    headers = {"Authorization": scheme + token, "content-type": "application/json"}
    if skip:
        headers["x-skip"] = "1"
    body = orjson.dumps({"ref": ref})
    # latin-1 bytes: header values reach the server as generated
    raw = {k: v.encode("latin-1") for k, v in headers.items()}
    r = client.post("/api/v0/launch/t/", content=body, headers=raw)
    assert r.status_code in (200, 202, 400, 429), (r.status_code, r.text)
    event(f"status {r.status_code}")
    launched = [e for e in log.events if isinstance(e, TriggerLaunched)]
    logged = [e for e in log.events if isinstance(e, TriggerLogged)]
    if r.status_code == 202:
        [accepted] = launched
        assert logged == [] and accepted.run_id == r.json()["run_id"]
        assert ref == "refs/heads/main" and not skip
        return
    assert launched == []
    [entry] = logged
    outcome = {200: "filtered", 400: "rejected", 429: "rate_limited"}[r.status_code]
    assert entry.outcome == outcome and entry.status_code == r.status_code
    if r.status_code == 200:
        assert r.json() == {"ok": True, "filtered": True}
        assert ref != "refs/heads/main" or skip
    if r.status_code == 429:
        assert int(r.headers["retry-after"]) >= 1
