"""The whole system as `make run` starts it, driven only over HTTP through the gateway."""

from __future__ import annotations

import hashlib
import hmac
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from standardwebhooks import Webhook

from hookrun.dev.pytest_kafka import new_namespace
from tests.e2e.support import WHSEC, System, github_headers, run_id_of, wait_for

pytestmark = pytest.mark.e2e

# status -> (trigger, payload, run-info status, step of the execution it creates or None)
OUTCOMES: dict[str, tuple[str, dict[str, Any], str, str | None]] = {
    "SUCCESS": ("gh-ok", {"n": 7}, "completed", "ok"),
    "FAILURE": ("sw-fail", {"x": 1}, "error", "fail"),
    "TIMED_OUT": ("gh-slow", {"x": 1}, "error", "slow"),
    "CANCELED": ("sw-hold", {"x": 1}, "error", "hold"),
    "INVALID_PAYLOAD": ("gh-ok", {"size": 1}, "error", None),
    "UNRESOLVED_AUTH": ("sw-authed", {"x": 1}, "error", None),
}


@pytest.fixture(scope="module")
def system(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    started = System(
        kafka_bootstrap, tmp_path_factory.mktemp("e2e"), namespace=new_namespace("e2e")
    )
    try:
        yield started.start()
    finally:
        started.stop()


@pytest.fixture(scope="module")
def launched(system: System) -> dict[str, str]:
    """One run per outcome, all launched at once; status -> run id."""
    return {
        status: run_id_of(system.launch(trigger, payload))
        for status, (trigger, payload, _, _) in OUTCOMES.items()
    }


def cancel_once_running(system: System, run_id: str) -> None:
    def started() -> bool:
        r = system.admin("GET", f"/runs/{run_id}")
        return r.status_code == 200 and any(x["started_at"] for x in r.json()["executions"])

    wait_for(started, 60, f"the execution of {run_id} to start\n{system.logs()}")
    r = system.admin("POST", f"/runs/{run_id}/cancel", json={"reason": "e2e"})
    assert r.status_code == 202, r.text
    assert r.json() == {"run_id": run_id, "cancel_requested": True}


@pytest.mark.parametrize("status", list(OUTCOMES))
def test_each_outcome_shows_in_run_info_and_arrives_as_a_signed_notification(
    system: System, launched: dict[str, str], status: str
) -> None:
    trigger, payload, info_status, step = OUTCOMES[status]
    run_id = launched[status]
    if status == "CANCELED":
        cancel_once_running(system, run_id)

    # run info, signed like the launch, until the run is terminal
    info = system.finished_info(trigger, run_id)
    assert info["status"] == info_status, info
    if step is None:
        assert info["result"] == [], info  # decided before anything was created
    else:
        [entry] = info["result"]
        assert entry == {
            "action": "run_execution",
            "execution_step": step,
            "execution_id": entry["execution_id"],
        }

    # the RunNotification: signature, schema, then its content
    body = system.notification(run_id)
    [request] = system.notifications(run_id)
    assert request.path == f"/hooks/{trigger}"
    assert request.headers["content-type"].startswith("application/json")
    assert request.headers["webhook-id"].startswith(f"msg_{run_id}")
    assert (
        request.headers["x-trigger-signature-256"]
        == hmac.new(WHSEC.encode(), request.body, hashlib.sha256).hexdigest()
    )
    assert body["status"] == status
    assert body["id"] == run_id
    assert body["ok"] is (status == "SUCCESS")
    assert body["isTest"] is False
    assert body["job"]["id"] == trigger
    assert body["invocation"]["payload"] == payload
    assert body["project"] == {"id": "p-e2e", "slug": "e2e", "name": "E2E"}
    assert body["executionCount"] == (0 if step is None else 1)
    if step is not None:
        [record] = body["statuses"]
        assert record["key"] == info["result"][0]["execution_id"]
        assert record["label"] == step
        assert record["state"] == ("success" if status == "SUCCESS" else "failure")
    if status == "SUCCESS":
        assert list(body["output"].values()) == [{"params": {"n": 7}, "payload": {"n": 7}}]
    else:
        assert "output" not in body
        assert body["error"]["message"]
    if status == "FAILURE":
        assert body["task"]["name"] == "fail"
        assert body["task"]["status"] == "ERRORED"
        assert "boom" in body["error"]["stack"]


def test_a_pipeline_passes_a_file_from_one_node_to_the_next(system: System) -> None:
    token = uuid.uuid4().hex
    run_id = run_id_of(system.launch("token-pipe", {"token": token}))

    # static secret: run info by GET
    info = system.finished_info("token-pipe", run_id)
    assert info["status"] == "completed", info
    [entry] = info["result"]
    assert entry == {
        "action": "run_pipeline",
        "pipeline_name": "handoff",
        "pipeline_id": entry["pipeline_id"],
    }

    body = system.notification(run_id)
    assert body["status"] == "SUCCESS"
    assert body["executionCount"] == 2
    assert sorted(s["label"] for s in body["statuses"]) == ["consume", "produce"]
    assert {"files": {"handoff.txt": f"token={token}"}} in body["output"].values()


def test_a_redelivery_gets_the_same_run_and_one_notification(system: System) -> None:
    body = b'{"n": 3}'
    delivery = str(uuid.uuid4())
    first = run_id_of(
        system.http.post(
            "/api/v0/launch/gh-ok/", content=body, headers=github_headers(body, delivery)
        )
    )
    again = run_id_of(
        system.http.post(
            "/api/v0/launch/gh-ok/", content=body, headers=github_headers(body, delivery)
        )
    )
    assert again == first
    assert system.notification(first)["status"] == "SUCCESS"

    # a later run of the same trigger notified: the redelivery had time to cause a second one
    marker = run_id_of(system.launch("gh-ok", {"n": 4}))
    system.notification(marker)
    assert len(system.notifications(first)) == 1
    events = system.admin("GET", f"/runs/{first}/events").json()["events"]
    launches = [e for e in events if e["type"] == "hookrun.trigger.launched"]
    assert len(launches) == 1
    log = system.admin("GET", "/triggers/gh-ok/log", params={"limit": 500}).json()["entries"]
    assert {e["outcome"] for e in log if e["delivery_id"] == delivery} >= {"duplicate"}


def test_a_replay_runs_the_trigger_again_and_both_runs_show_it(
    system: System, launched: dict[str, str]
) -> None:
    original = launched["SUCCESS"]
    system.notification(original)

    # the same payload, then a new one; conditions are not asked for (the token authorises)
    again = system.admin("POST", f"/runs/{original}/replay")
    assert again.status_code == 202, again.text
    assert again.json() == {"run_id": again.json()["run_id"], "replay_of": original}
    edited = system.admin("POST", f"/runs/{original}/replay", json={"payload": {"n": 11}})
    assert edited.status_code == 202, edited.text
    same_id, new_id = again.json()["run_id"], edited.json()["run_id"]
    assert len({original, same_id, new_id}) == 3

    body = system.notification(new_id)
    assert body["status"] == "SUCCESS"
    assert body["invocation"]["context"]["replay_of"] == original
    assert body["invocation"]["payload"] == {"n": 11}
    assert list(body["output"].values()) == [{"params": {"n": 11}, "payload": {"n": 11}}]
    assert system.notification(same_id)["invocation"]["payload"] == {"n": 7}
    assert "replay_of" not in system.notification(original)["invocation"]["context"]

    detail = system.admin("GET", f"/runs/{new_id}").json()
    assert detail["replay_of"] == original
    assert detail["trigger_id"] == "gh-ok"
    assert system.admin("GET", f"/runs/{original}").json()["replays"] == [same_id, new_id]

    assert system.admin("POST", f"/runs/{uuid.uuid4()}/replay").status_code == 404
    assert system.http.post(f"/api/v1/runs/{original}/replay").status_code == 401


def test_the_admin_api_lists_the_run_with_its_deliveries(
    system: System, launched: dict[str, str]
) -> None:
    run_id = launched["SUCCESS"]
    system.notification(run_id)
    assert system.http.get("/api/v1/runs").status_code == 401

    listed = system.admin("GET", "/runs", params={"trigger_id": "gh-ok", "limit": 500})
    assert listed.status_code == 200, listed.text
    [run] = [r for r in listed.json()["runs"] if r["run_id"] == run_id]
    assert run["status"] == "SUCCESS"
    assert run["info_status"] == "completed"

    def delivered() -> dict[str, Any] | None:
        detail = system.admin("GET", f"/runs/{run_id}").json()
        deliveries = detail["deliveries"]
        return detail if deliveries and deliveries[0]["attempts"] else None

    detail = wait_for(delivered, 30, "the delivery attempt in the admin API")
    [delivery] = detail["deliveries"]
    assert delivery["url"] == system.receiver.url("/hooks/gh-ok")
    assert delivery["message_id"].startswith(f"msg_{run_id}")
    assert delivery["last_status_code"] == 200
    [attempt] = delivery["attempts"]
    assert attempt["status_code"] == 200
    [execution] = detail["executions"]
    assert execution["exit_code"] == 0
    assert execution["status"] == "SUCCESS"


def test_a_subscription_made_through_the_gateway_gets_the_next_failed_run(system: System) -> None:
    url = system.receiver.url("/hooks/made-at-run-time")
    r = system.admin(
        "POST",
        "/subscriptions",
        json={"trigger_id": "sw-fail", "url": url, "statuses": ["FAILURE"]},
    )
    assert r.status_code == 201, r.text
    made = r.json()
    listed = system.admin("GET", "/subscriptions").json()["subscriptions"]
    assert [s["source"] for s in listed if s["id"] == made["id"]] == ["api"]
    assert made["secret"] not in str(listed)

    run_id = run_id_of(system.launch("sw-fail", {"x": 1}))

    def arrived() -> Any:
        return [r for r in system.notifications(run_id) if r.path == "/hooks/made-at-run-time"]

    [request] = wait_for(arrived, 60, f"the new subscription's notification\n{system.logs()}")
    Webhook(made["secret"]).verify(request.body, request.headers)
    assert request.json()["status"] == "FAILURE"
    assert system.admin("DELETE", f"/subscriptions/{made['id']}").status_code == 204
