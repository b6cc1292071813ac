"""Helpers of the end-to-end tests: the whole system as `make run` starts it, and signed requests."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import httpx
import jsonschema
from standardwebhooks import Webhook

from hookrun.dev.kafka_net import free_port
from hookrun.dev.procs import ServiceProcess
from hookrun.dev.receiver import Received, Receiver

T = TypeVar("T")

REPO = Path(__file__).resolve().parents[2]
NOTIFICATION_SCHEMA = json.loads(
    (REPO / "libs/events/schemas/run-notification/v2.json").read_text()
)

GH_SECRET = "e2e-gh-secret"
SW_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
TOKEN = "e2e-static-token"
WHSEC = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"
ADMIN_TOKEN = "e2e-admin-token"

STEP = r"""
import json, os, pathlib, sys, time
mode = sys.argv[1]
inputs = pathlib.Path(os.environ["HOOKRUN_INPUTS"])
outputs = pathlib.Path(os.environ["HOOKRUN_OUTPUTS"])
params = json.load(open(os.environ["HOOKRUN_PARAMETERS"]))
def out(doc):
    json.dump(doc, open(os.environ["HOOKRUN_OUTPUT"], "w"))
if mode == "ok":
    out({"params": params, "payload": json.loads((inputs / "payload").read_text())})
elif mode == "fail":
    print("boom", file=sys.stderr)
    sys.exit(3)
elif mode == "sleep":
    print("sleeping", flush=True)
    time.sleep(float(sys.argv[2]))
elif mode == "produce":
    payload = json.loads((inputs / "payload").read_text())
    (outputs / "handoff.txt").write_text("token=" + payload["token"])
    out({"wrote": "handoff.txt"})
elif mode == "consume":
    out({"files": {p.name: p.read_text() for p in sorted(inputs.iterdir())}})
"""


def config_text(receiver: Receiver) -> str:
    """The system's config: one trigger per outcome, signed with hmac, Standard Webhooks or a token."""

    def notify(trigger_id: str) -> str:
        url = receiver.url(f"/hooks/{trigger_id}")
        return f'    notifications: [{{url: "{url}", secret: "${{env:HOOKRUN_E2E_WHSEC}}"}}]\n'

    github = '    conditions: [{preset: github, secret: "${env:HOOKRUN_E2E_GH_SECRET}"}]\n'
    standard = (
        '    conditions: [{type: standard_webhooks, secret: "${env:HOOKRUN_E2E_SW_SECRET}"}]\n'
    )
    text = '    response: {text: "Created run {run_id}"}\n'
    json_ = (
        '    response: {json: {status: success, run_id: "{run_id}", nested: {id: "{run_id}"}}}\n'
    )

    def trigger(
        trigger_id: str, conditions: str, action: str, response: str, extra: str = ""
    ) -> str:
        return (
            f"  - id: {trigger_id}\n    title: {trigger_id}\n{extra}{conditions}"
            f"    actions: [{action}]\n{response}{notify(trigger_id)}"
        )

    return (
        """
project: {id: p-e2e, slug: e2e, name: E2E}
organization: {id: o-e2e, slug: acme, title: Acme}
environment: {id: e-e2e, slug: test, type: DEVELOPMENT}
steps:
  - name: ok
    command: ["python3", "{config_dir}/step.py", "ok", "--n", "{parameters.n}"]
    parameters: [{name: n, type: integer, default: 1}]
    inputs: [{name: payload}]
  - {name: fail, command: ["python3", "{config_dir}/step.py", "fail"]}
  - {name: slow, command: ["python3", "{config_dir}/step.py", "sleep", "30"], timeout_s: 1}
  - {name: hold, command: ["python3", "{config_dir}/step.py", "sleep", "60"]}
  - {name: authed, command: ["true"], env: {TOKEN: "${env:HOOKRUN_E2E_MISSING_TOKEN}"}}
  - name: produce
    command: ["python3", "{config_dir}/step.py", "produce"]
    inputs: [{name: payload}]
  - {name: consume, command: ["python3", "{config_dir}/step.py", "consume"]}
pipelines:
  - name: handoff
    nodes: [{name: produce, step: produce}, {name: consume, step: consume}]
    edges: [{from: produce, to: consume}]
notifier:
  allow_private_targets: true
triggers:
"""
        + trigger(
            "gh-ok",
            github,
            '{action: run_execution, step: ok, parameters: {n: "{payload.n}"}, '
            "payload_input: payload}",
            text,
            "    payload_schema: {type: object, required: [n], properties: {n: {type: integer}}}\n",
        )
        + trigger("gh-slow", github, "{action: run_execution, step: slow}", text)
        + trigger("sw-fail", standard, "{action: run_execution, step: fail}", json_)
        + trigger("sw-hold", standard, "{action: run_execution, step: hold}", json_)
        + trigger("sw-authed", standard, "{action: run_execution, step: authed}", json_)
        + trigger(
            "token-pipe",
            "    conditions: [{type: static_secret, header: X-Token, "
            'secret: "${env:HOOKRUN_E2E_TOKEN}"}]\n',
            "{action: run_pipeline, pipeline: handoff, payload_input: produce.payload}",
            json_,
        )
    )


def wait_for(check: Callable[[], T | None], timeout_s: float, what: str) -> T:
    """Poll ``check`` until it returns something truthy; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(0.1)


def github_headers(body: bytes, delivery: str | None = None) -> dict[str, str]:
    sig = hmac.new(GH_SECRET.encode(), body, hashlib.sha256).hexdigest()
    headers = {"X-Hub-Signature-256": f"sha256={sig}", "content-type": "application/json"}
    if delivery is not None:
        headers["X-GitHub-Delivery"] = delivery
    return headers


def standard_headers(body: bytes) -> dict[str, str]:
    """Standard Webhooks headers made by the official library, a fresh message id each time."""
    msg_id = f"msg_{uuid.uuid4().hex}"
    now = datetime.now(tz=UTC)
    signature = Webhook(SW_SECRET).sign(msg_id, now, body.decode())
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": signature,
        "content-type": "application/json",
    }


def signed_headers(trigger_id: str, body: bytes) -> dict[str, str]:
    if trigger_id.startswith("gh-"):
        return github_headers(body)
    if trigger_id.startswith("sw-"):
        return standard_headers(body)
    return {"X-Token": TOKEN, "content-type": "application/json"}


def verified_notification(request: Received) -> dict[str, Any]:
    """The notification body after checking its signature (standardwebhooks) and schema."""
    Webhook(WHSEC).verify(request.body, request.headers)  # raises on a bad signature
    body = request.json()
    jsonschema.validate(body, NOTIFICATION_SCHEMA, format_checker=jsonschema.FormatChecker())
    return body


class System:
    """gateway, status, runner and notifier as separate processes, plus a recording receiver."""

    def __init__(
        self,
        bootstrap: str,
        root: Path,
        *,
        config: Callable[[Receiver], str] = config_text,
        receiver: Receiver | None = None,
        env: dict[str, str] | None = None,
        namespace: str | None = None,
    ) -> None:
        """``config``, ``receiver`` and ``env`` let the benchmark reuse the system with its own triggers.

        ``namespace``: its topics' namespace; else a fresh ``e2e-<hex>``.
        """
        self.root = root
        # Executions run as another user (nobody), which must reach the config's step script.
        root.chmod(0o755)
        self.namespace = namespace or f"e2e-{uuid.uuid4().hex[:8]}"
        self.receiver = receiver if receiver is not None else Receiver([WHSEC])
        (root / "step.py").write_text(STEP)
        config_path = root / "hookrun.yaml"
        config_path.write_text(config(self.receiver))
        self.port, status_port = free_port(), free_port()
        runner_health, notifier_health = free_port(), free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        env = {
            # what run.py gives every service
            "HOOKRUN_CONFIG": str(config_path),
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "HOOKRUN_PORT": str(self.port),
            "HOOKRUN_STATUS_PORT": str(status_port),
            "HOOKRUN_STATUS_URL": f"http://127.0.0.1:{status_port}",
            "HOOKRUN_DATA_DIR": str(root / "data"),
            "HOOKRUN_DATABASE_URL": f"sqlite:///{root / 'status.db'}",
            "HOOKRUN_ADMIN_TOKEN": ADMIN_TOKEN,
            # this test's own topics and consumer groups on the shared broker
            "HOOKRUN_NAMESPACE": self.namespace,
            "HOOKRUN_RUNNER_HEALTH_PORT": str(runner_health),
            "HOOKRUN_NOTIFIER_HEALTH_PORT": str(notifier_health),
            "HOOKRUN_NOTIFIER_RETRY_SCHEDULE_S": "0,1,2",
            "HOOKRUN_E2E_GH_SECRET": GH_SECRET,
            "HOOKRUN_E2E_SW_SECRET": SW_SECRET,
            "HOOKRUN_E2E_TOKEN": TOKEN,
            "HOOKRUN_E2E_WHSEC": WHSEC,
            **(env or {}),
        }
        logs = root / "logs"
        self.procs = [
            ServiceProcess(
                "status",
                "hookrun.status",
                env,
                logs,
                health_url=f"{env['HOOKRUN_STATUS_URL']}/healthz",
            ),
            ServiceProcess(
                "runner",
                "hookrun.runner",
                env,
                logs,
                health_url=f"http://127.0.0.1:{runner_health}/healthz",
            ),
            ServiceProcess(
                "notifier",
                "hookrun.notifier",
                env,
                logs,
                health_url=f"http://127.0.0.1:{notifier_health}/healthz",
            ),
            ServiceProcess(
                "gateway", "hookrun.gateway", env, logs, health_url=f"{self.base}/healthz"
            ),
        ]
        self.http = httpx.Client(base_url=self.base, timeout=30)

    def start(self) -> System:
        self.receiver.start()
        try:
            # Started side by side: each waits for its own health endpoint.
            with ThreadPoolExecutor(len(self.procs)) as pool:
                for future in [pool.submit(p.start, wait_s=120) for p in self.procs]:
                    future.result()
            # A runner that holds its partitions runs a launch at once, not after a rebalance.
            self.procs[1].wait_healthy(120, ready_key="assigned")
        except BaseException:
            self.stop()  # the services that did start must not outlive the failed test
            raise
        return self

    def stop(self) -> None:
        self.http.close()
        for proc in reversed(self.procs):
            proc.stop()
        self.receiver.stop()

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.tail(20)}" for p in self.procs)

    def launch(
        self, trigger_id: str, payload: Any, headers: dict[str, str] | None = None
    ) -> httpx.Response:
        body = json.dumps(payload).encode()
        return self.http.post(
            f"/api/v0/launch/{trigger_id}/",
            content=body,
            headers=headers if headers is not None else signed_headers(trigger_id, body),
        )

    def run_info(self, trigger_id: str, run_id: str) -> httpx.Response:
        """POST run info signed like the launch (GET with the token for static secrets)."""
        if trigger_id.startswith("token-"):
            return self.http.get(
                f"/api/v0/launch/{trigger_id}/run/",
                params={"run_id": run_id},
                headers={"X-Token": TOKEN},
            )
        body = json.dumps({"run_id": run_id}).encode()
        return self.http.post(
            f"/api/v0/launch/{trigger_id}/run/",
            content=body,
            headers=signed_headers(trigger_id, body),
        )

    def finished_info(self, trigger_id: str, run_id: str, timeout_s: float = 60) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            r = self.run_info(trigger_id, run_id)
            assert r.status_code in (200, 503), r.text
            if r.status_code == 200 and r.json()["status"] != "pending":
                return r.json()
            return None

        return wait_for(check, timeout_s, f"run {run_id} of {trigger_id} to finish\n{self.logs()}")

    def notifications(self, run_id: str) -> list[Received]:
        return [r for r in list(self.receiver.requests) if r.json().get("id") == run_id]

    def notification(self, run_id: str, timeout_s: float = 60) -> dict[str, Any]:
        [request] = wait_for(
            lambda: self.notifications(run_id), timeout_s, f"the notification of {run_id}"
        )
        return verified_notification(request)

    def admin(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        return self.http.request(method, f"/api/v1{path}", headers=headers, **kwargs)


def run_id_of(response: httpx.Response) -> str:
    assert response.status_code == 202, response.text
    if response.headers["content-type"].startswith("text/plain"):
        assert response.text.startswith("Created run "), response.text
        return response.text.removeprefix("Created run ")
    doc = response.json()
    assert doc == {"status": "success", "run_id": doc["run_id"], "nested": {"id": doc["run_id"]}}
    return str(doc["run_id"])
