"""A flood of invalid signatures beside valid launches: correctness only.

How much the flood slows valid launches is a benchmark row (bench/bench_system.py), never a timed
assertion here: on a shared 2-core machine a timed test is flaky.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from hookrun.dev.pytest_kafka import new_namespace
from tests.e2e.support import System, github_headers, run_id_of, wait_for

pytestmark = pytest.mark.e2e

VALID = 40
FLOOD_FACTOR = 5


@pytest.fixture(scope="module")
def system(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    started = System(
        kafka_bootstrap,
        tmp_path_factory.mktemp("flood"),
        namespace=new_namespace("e2e"),
        # Past the limit, one source's refusals are counted into a summary entry at the end of
        # its window: a short window brings the summary within the test's wait, and a low
        # limit keeps the flood sampled however slowly a loaded machine sends it.
        env={"HOOKRUN_REJECTION_LOG_WINDOW_S": "1", "HOOKRUN_REJECTION_LOG_LIMIT": "2"},
    )
    try:
        yield started.start()
    finally:
        started.stop()


def test_valid_launches_are_all_accepted_and_every_forgery_rejected_and_logged(
    system: System,
) -> None:
    def send(i: int) -> tuple[bool, httpx.Response]:
        valid = i % (FLOOD_FACTOR + 1) == 0
        body = json.dumps({"n": i}).encode()
        headers = github_headers(body)
        if not valid:
            headers["X-Hub-Signature-256"] = "sha256=" + ("0" * 64 if i % 2 else "zz" + str(i))
        with httpx.Client(base_url=system.base, timeout=60) as client:
            return valid, client.post("/api/v0/launch/gh-ok/", content=body, headers=headers)

    # one valid launch for every FLOOD_FACTOR forged ones, all interleaved and concurrent
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(send, range(VALID * (FLOOD_FACTOR + 1))))
    valid = [r for ok, r in answers if ok]
    forged = [r for ok, r in answers if not ok]
    assert len(valid) == VALID and len(forged) == VALID * FLOOD_FACTOR
    run_ids = {run_id_of(r) for r in valid}  # every one 202 with its own run id
    assert len(run_ids) == VALID
    assert {(r.status_code, r.text) for r in forged} == {(400, '{"error":"launch rejected"}')}

    # the trigger log: every forgery counted with its reason (past the sampling limit in
    # summary entries), every valid launch accepted
    def complete() -> list[dict[str, object]] | None:
        r = system.admin("GET", "/triggers/gh-ok/log", params={"limit": 500})
        assert r.status_code == 200, r.text
        entries = r.json()["entries"]
        rejected = [e for e in entries if e["outcome"] == "rejected"]
        accepted = {e["run_id"] for e in entries if e["outcome"] == "accepted"}
        if sum(e["count"] for e in rejected) >= len(forged) and run_ids <= accepted:
            return entries
        return None

    entries = wait_for(complete, 60, f"the trigger log of the flood\n{system.logs()}")
    rejected = [e for e in entries if e["outcome"] == "rejected"]
    assert sum(e["count"] for e in rejected) == len(forged)
    assert len(rejected) < len(forged)  # sampled: a flood does not grow the log one by one
    assert all(e["status_code"] == 400 for e in rejected)
    mismatch = "conditions[0] (hmac): signature mismatch"
    assert all(e["reason"] == mismatch or str(e["reason"]).endswith(mismatch) for e in rejected)
