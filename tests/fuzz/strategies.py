"""Hypothesis strategies for hostile webhook requests: bodies, headers, queries, trigger ids.

Every condition type gets both garbage and correctly signed headers, so the generated requests
reach every branch of the condition checks, the accept path included.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

import orjson
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

WHSEC = "whsec_" + base64.b64encode(b"k" * 24).decode()
STRIPE = "whsec_stripe"
SLACK = "slack-secret"

#: One trigger per condition type (and the presets), a payload dedupe path, a disabled one.
CONFIG = f"""
project: {{id: p-1, slug: fuzz, name: Fuzz}}
organization: {{id: o-1, slug: acme, title: Acme}}
environment: {{id: e-1, slug: dev, type: DEVELOPMENT}}
steps:
  - {{name: noop, command: ["true"]}}
triggers:
  - id: gh
    title: GitHub preset
    conditions: [{{preset: github, secret: gh-secret}}]
    actions: [{{action: run_execution, step: noop}}]
    response: {{text: "Created run {{run_id}}"}}
    notifications: [{{url: "https://hooks.example.com/gh", secret: whsec_c3ctc2VjcmV0}}]
  - id: token
    title: Static token in a header, dedupe by payload id
    conditions: [{{type: static_secret, header: X-Token, secret: tok}}]
    dedupe: {{payload: id}}
    actions: [{{action: run_execution, step: noop}}]
    response: {{json: {{status: success, run_id: "{{run_id}}", nested: ["{{run_id}}", 3]}}}}
  - id: query
    title: Static token in the query
    conditions: [{{type: static_secret, query: token, secret: qtok}}]
    actions: [{{action: run_execution, step: noop}}]
  - id: sw
    title: Standard Webhooks
    conditions: [{{type: standard_webhooks, secret: "{WHSEC}", tolerance_s: 300}}]
    actions: [{{action: run_execution, step: noop}}]
  - id: b64
    title: HMAC sha512 base64 without prefix
    conditions: [{{type: hmac, header: X-Sig, secret: s, algorithm: sha512, encoding: base64}}]
    actions: [{{action: run_execution, step: noop}}]
  - id: sha1
    title: HMAC sha1 hex
    conditions: [{{type: hmac, header: X-Hub-Signature, secret: s1, algorithm: sha1, prefix: "sha1="}}]
    actions: [{{action: run_execution, step: noop}}]
  - id: stripe
    title: Stripe preset
    conditions: [{{preset: stripe, secret: "{STRIPE}"}}]
    actions: [{{action: run_execution, step: noop}}]
  - id: slack
    title: Slack preset
    conditions: [{{preset: slack, secret: "{SLACK}"}}]
    actions: [{{action: run_execution, step: noop}}]
  - id: ip
    title: IP allow-list (the test client is not an IP address)
    conditions: [{{type: ip_allow, cidrs: ["10.0.0.0/8", "::1/128"]}}]
    actions: [{{action: run_execution, step: noop}}]
  - id: open
    title: No conditions, and a schedule (the admin API's schedules)
    conditions: []
    actions: [{{action: run_execution, step: noop}}]
    schedule: {{cron: "*/5 * * * *", timezone: Europe/Helsinki, misfire_grace_s: 300}}
  - id: disabled-one
    title: Disabled
    enabled: false
    conditions: []
    actions: [{{action: run_execution, step: noop}}]
"""

#: Triggers whose correctly signed requests are accepted in-process ("ip" never is: the test
#: client's address is "testclient").
SIGNABLE = ("gh", "token", "query", "sw", "b64", "sha1", "stripe", "slack", "open")
KNOWN = (*SIGNABLE, "ip", "disabled-one")
#: Triggers whose conditions sign the body: their run info takes run_id from a POST's body only.
SIGN_THE_BODY = frozenset({"gh", "sw", "b64", "sha1", "stripe", "slack"})
#: Headers the conditions read, and those the gateway sets itself or does not forward; random
#: extra headers never use these names.
CONDITION_HEADERS = frozenset(
    {
        "x-hub-signature-256",
        "x-hub-signature",
        "x-token",
        "x-sig",
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
        "svix-id",
        "svix-timestamp",
        "svix-signature",
        "stripe-signature",
        "x-slack-signature",
        "x-slack-request-timestamp",
        "x-github-delivery",
        "idempotency-key",
        "content-length",
        "transfer-encoding",
        "host",
        "content-type",
        "expect",
        "connection",
        "keep-alive",
        "x-forwarded-for",
    }
)

#: derandomize=True: the same examples every run, so CI is stable (no example database either).
#: HOOKRUN_FUZZ_SCALE multiplies every test's examples (e.g. 10 for a long exploratory run).
_BASE = settings(
    derandomize=True,
    deadline=None,
    database=None,
    print_blob=True,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
        HealthCheck.function_scoped_fixture,
    ],
)


def fuzz(max_examples: int) -> settings:
    """The fuzz tests' settings with ``max_examples`` (times ``HOOKRUN_FUZZ_SCALE``)."""
    scale = float(os.environ.get("HOOKRUN_FUZZ_SCALE", "1"))
    return settings(_BASE, max_examples=max(1, int(max_examples * scale)))


# -- values ---------------------------------------------------------------------------------------

# Header values as ASGI servers deliver them: latin-1, no CR/LF/NUL.
header_value = st.one_of(
    st.text(
        st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"),
        max_size=80,
    ),
    st.sampled_from(
        [
            "",
            " ",
            "sha256=",
            "sha1=zz",
            "v1,",
            "v1,!!!",
            "t=,v1=",
            "v0=",
            "0",
            "-1",
            "²³",
            "1e9",
            "99999999999999999999999",
        ]
    ),
    st.integers(min_value=0, max_value=12).map(lambda n: "a" * (10**n % 20000)),
    st.binary(max_size=64).map(lambda b: base64.b64encode(b).decode()),
    st.binary(max_size=64).map(lambda b: b.hex()),
)
#: Numbers no sender makes, for timestamp and signature headers: past int()'s 4300-digit limit,
#: past a float's range, and zero-padded.
huge_numbers = st.one_of(
    st.integers(min_value=4301, max_value=12000).map(lambda n: "9" * n),
    st.integers(min_value=309, max_value=400).map(lambda n: "1" + "0" * n),
    st.integers(min_value=16, max_value=300).map(lambda n: "9" * n),
    st.integers(min_value=1, max_value=5000).map(lambda n: "0" * n + "1700000000"),
)
header_name = st.text(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_!#$%&'*+.^`|~",
    min_size=1,
    max_size=30,
).filter(lambda n: n.lower() not in CONDITION_HEADERS)

json_value = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)


@dataclass
class Body:
    data: bytes
    content_type: str | None
    #: How deep the JSON nests, for a body made to nest past HOOKRUN_MAX_JSON_DEPTH (else 0).
    depth: int = 0


def _nested(depth: int, kinds: str, leaf: bytes) -> bytes:
    """JSON nested ``depth`` levels, arrays ("[") and objects ("{") in turn as ``kinds`` says."""
    opens, closes = [], []
    for level in range(depth):
        if kinds[level % len(kinds)] == "[":
            opens.append(b"[")
            closes.append(b"]")
        else:
            opens.append(b'{"k":')
            closes.append(b"}")
    return b"".join(opens) + leaf + b"".join(reversed(closes))


#: JSON nested 65-300 levels deep (past HOOKRUN_MAX_JSON_DEPTH's default of 64), arrays,
#: objects or both in turn, alone or inside an ordinary object; the deepest objects are over the
#: fuzz tests' body limit, and get 413.
too_deep = st.builds(
    lambda depth, kinds, leaf, wrapped, content_type: Body(
        b'{"id": 1, "deep": ' + _nested(depth, kinds, leaf) + b"}"
        if wrapped
        else _nested(depth, kinds, leaf),
        content_type,
        depth + wrapped,
    ),
    st.integers(min_value=65, max_value=300),
    st.sampled_from(["[", "{", "[{", "{["]),
    st.sampled_from([b"1", b'"x"', b"[]", b"{}", b"null"]),
    st.booleans(),
    st.sampled_from(["application/json", None]),
)

bodies = st.one_of(
    st.builds(
        Body,
        st.binary(max_size=1500),
        st.sampled_from([None, "application/octet-stream", "text/plain"]),
    ),
    st.builds(
        Body,
        json_value.map(orjson.dumps),
        st.sampled_from(["application/json", "application/json; charset=utf-8", None]),
    ),
    st.builds(
        Body,
        st.dictionaries(st.text(max_size=12), st.text(max_size=40), max_size=6).map(
            lambda d: urllib.parse.urlencode(d).encode()
        ),
        st.just("application/x-www-form-urlencoded"),
    ),
    st.builds(
        Body,
        st.sampled_from(
            [
                b"x" * 1024,
                b"x" * 1025,
                b"{" * 1000,
                b"[" * 600 + b"]" * 600,
                b"\xff\xfe\x00",
                b'{"id": 123456789012345678901234567890}',
                b'{"id": 1e999, "run_id": NaN}',
                b'{"id": "\\ud800"}',
                b'{"id": true}',
            ]
        ),
        st.none(),
    ),
    too_deep,
)

queries = st.dictionaries(st.text(max_size=10), st.text(max_size=20), max_size=4)

# Path segments: anything but "/" (which would select another route); "." and ".." are
# resolved by the client before sending.
trigger_ids = st.one_of(
    st.sampled_from(KNOWN),
    st.text(min_size=1, max_size=60).filter(lambda t: "/" not in t and t not in {".", ".."}),
    st.just("x" * 300),
)


# -- signing --------------------------------------------------------------------------------------


def _b64key(whsec: str) -> bytes:
    return base64.b64decode(whsec.removeprefix("whsec_"))


def signed_headers(trigger_id: str, body: bytes, msg_id: str, now: int | str) -> dict[str, str]:
    """Headers that pass ``trigger_id``'s conditions for ``body`` (see CONFIG) at time ``now``.

    ``now`` may be any string of digits: the signature then covers it as written.
    """
    if trigger_id == "gh":
        return {
            "X-Hub-Signature-256": "sha256="
            + hmac.new(b"gh-secret", body, hashlib.sha256).hexdigest()
        }
    if trigger_id == "token":
        return {"X-Token": "tok"}
    if trigger_id == "b64":
        return {"X-Sig": base64.b64encode(hmac.digest(b"s", body, "sha512")).decode()}
    if trigger_id == "sha1":
        return {"X-Hub-Signature": "sha1=" + hmac.new(b"s1", body, hashlib.sha1).hexdigest()}
    if trigger_id == "sw":
        signed = f"{msg_id}.{now}.".encode() + body
        sig = base64.b64encode(hmac.digest(_b64key(WHSEC), signed, "sha256")).decode()
        return {
            "webhook-id": msg_id,
            "webhook-timestamp": str(now),
            "webhook-signature": f"v1,{sig}",
        }
    if trigger_id == "stripe":
        sig = hmac.new(STRIPE.encode(), f"{now}.".encode() + body, hashlib.sha256).hexdigest()
        return {"Stripe-Signature": f"t={now},v1={sig}"}
    if trigger_id == "slack":
        sig = hmac.new(SLACK.encode(), f"v0:{now}:".encode() + body, hashlib.sha256).hexdigest()
        return {"X-Slack-Request-Timestamp": str(now), "X-Slack-Signature": f"v0={sig}"}
    return {}


# Garbage for every condition's headers: missing, malformed, wrong, stale, wrong version.
garbage_signatures = st.fixed_dictionaries(
    {},
    optional={
        "X-Hub-Signature-256": st.one_of(
            header_value,
            header_value.map(lambda v: "sha256=" + v),
            huge_numbers.map(lambda v: "sha256=" + v),
        ),
        "X-Hub-Signature": st.one_of(header_value, header_value.map(lambda v: "sha1=" + v)),
        "X-Token": header_value,
        "X-Sig": header_value,
        "webhook-id": header_value,
        "webhook-timestamp": st.one_of(
            header_value, st.integers(-(2**70), 2**70).map(str), huge_numbers
        ),
        "webhook-signature": st.one_of(
            header_value,
            header_value.map(lambda v: "v1," + v),
            huge_numbers.map(lambda v: "v1," + v),
        ),
        "svix-id": header_value,
        "svix-timestamp": st.one_of(header_value, huge_numbers),
        "svix-signature": header_value,
        "Stripe-Signature": st.one_of(
            header_value,
            st.tuples(st.integers(-(2**40), 2**70), header_value).map(
                lambda t: f"t={t[0]},v1={t[1]}"
            ),
            st.tuples(huge_numbers, st.one_of(header_value, huge_numbers)).map(
                lambda t: f"t={t[0]},v1={t[1]}"
            ),
        ),
        "X-Slack-Signature": st.one_of(
            header_value,
            header_value.map(lambda v: "v0=" + v),
            huge_numbers.map(lambda v: "v0=" + v),
        ),
        "X-Slack-Request-Timestamp": st.one_of(
            header_value, st.integers(-(2**40), 2**70).map(str), huge_numbers
        ),
        "X-GitHub-Delivery": header_value,
        "Idempotency-Key": header_value,
    },
)


@dataclass
class Launch:
    """One generated request, and whether it was meant to pass the conditions."""

    trigger_id: str
    body: Body
    headers: dict[str, str]
    query: dict[str, str]
    signed: bool
    notes: list[str] = field(default_factory=list)

    def url(self, suffix: str = "") -> str:
        path = f"/api/v0/launch/{urllib.parse.quote(self.trigger_id, safe='')}/{suffix}"
        return path + ("?" + urllib.parse.urlencode(self.query) if self.query else "")

    def all_headers(self) -> dict[str, bytes]:
        """The headers as bytes: latin-1 values reach the server as they were generated."""
        headers = {k: v.encode("latin-1") for k, v in self.headers.items()}
        if self.body.content_type is not None:
            headers["content-type"] = self.body.content_type.encode()
        return headers


@st.composite
def launches(draw: Any) -> Launch:
    """A request: correctly signed for a known trigger (then maybe tampered), or garbage."""
    extra = draw(st.dictionaries(header_name, header_value, max_size=4))
    query = draw(queries)
    body = draw(bodies)
    if draw(st.booleans()):
        trigger_id = draw(st.sampled_from(SIGNABLE))
        now = int(time.time())
        msg_id = "msg_" + draw(st.text("abcdef0123456789", min_size=1, max_size=12))
        headers = {**extra, **signed_headers(trigger_id, body.data, msg_id, now)}
        query = {k: v for k, v in query.items() if k != "token"}
        if trigger_id == "query":
            query["token"] = "qtok"
        launch = Launch(trigger_id, body, headers, query, signed=True)
        tamper = draw(st.sampled_from(["none", "none", "body", "drop", "stale", "huge"]))
        if tamper == "body" and trigger_id not in {"token", "query", "open"}:
            launch.body = Body(body.data + b"!", body.content_type)
            launch.signed = False
        elif tamper == "drop" and trigger_id != "open":
            launch.headers = extra
            launch.query = {k: v for k, v in query.items() if k != "token"}
            launch.signed = False
        elif tamper == "stale" and trigger_id in {"sw", "stripe", "slack"}:
            stale = signed_headers(trigger_id, body.data, msg_id, now - 3600)
            launch.headers = {**extra, **stale}
            launch.signed = False
        elif tamper == "huge" and trigger_id in {"sw", "stripe", "slack"}:
            # correctly signed over a timestamp no sender makes
            huge = signed_headers(trigger_id, body.data, msg_id, draw(huge_numbers))
            launch.headers = {**extra, **huge}
            launch.signed = False
        launch.notes.append(tamper)
        return launch
    headers = {**extra, **draw(garbage_signatures)}
    return Launch(draw(trigger_ids), body, headers, query, signed=False)


# -- step parameters ------------------------------------------------------------------------------

#: Unicode's control characters (category Cc: C0, DEL, C1).
control_characters = st.characters(categories=["Cc"])
#: What a sender puts where a step parameter is read from the payload: any text, text full of
#: control characters, text after a leading dash or a control character, and non-strings that
#: a string parameter takes as text (a negative number starts with "-").
parameter_values = st.one_of(
    st.text(max_size=30),
    st.text(st.one_of(control_characters, st.characters(max_codepoint=0x2FF)), max_size=30),
    st.tuples(
        st.one_of(
            st.sampled_from(["-", "--", "---", "-\t", " -", "\u2010", "\uff0d"]),
            control_characters,
        ),
        st.text(max_size=20),
    ).map("".join),
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
)
