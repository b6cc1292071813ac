"""`make chaos`: signed launches at a steady rate while every service is killed -9 and the broker restarts.

``python bench/chaos.py [--launches N] [--rate R] [--scale 1|2] [--poison N] [--report path]``
starts its own
broker (LocalKafka on free ports in a temp dir, never the dev broker on 127.0.0.1:9092) and the
whole system as `make run` starts it (one process per service instance, a namespace of its own,
a temp SQLite file per status instance, a no-op step, a recording receiver). It sends N signed
launches (each with its own GitHub delivery id, so in the gateway's transactions) open loop and, on a schedule, kills -9 and restarts each service once and restarts the
broker once. ``--poison N`` also sends N rounds of poisonous launches in the middle of the load
(a body nested 300 deep, an output over HOOKRUN_MAX_OUTPUT_BYTES, an output nested too deep,
outputs that add up past a Kafka message): the deep body must be refused, every other one must
end unsuccessful (FAILURE, or ABORTED when a kill caught its execution) and be notified like any
run. With ``--brokers 3`` the broker is a three-node cluster (replication factor 3, two in
sync) and, instead of the clean restart, the node leading the most partitions of the run topic
is killed -9 and restarted. With ``--scale 2`` runner, status and notifier run two instances
each; the killed consumer instance stays down long enough for its group to rebalance onto the
survivor, and comes back (a second rebalance). Then a bounded recovery window polls run info (through the
gateway, signed) until every acknowledged run is terminal and notified, reads every RunFinished
back from Kafka, prints a table, writes a JSON report and exits 1 if a requirement failed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import hmac
import json
import re
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `python bench/chaos.py` puts bench/, not the repo, on the path
    sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import orjson  # noqa: E402
from aiokafka import AIOKafkaConsumer  # noqa: E402

from bench.loadgen import build_request, roundtrip  # noqa: E402
from hookrun.dev.kafka import LocalKafka  # noqa: E402
from hookrun.dev.kafka_cluster import LocalKafkaCluster  # noqa: E402
from hookrun.dev.kafka_net import free_port  # noqa: E402
from hookrun.dev.procs import ServiceProcess  # noqa: E402
from hookrun.dev.receiver import Received, Receiver  # noqa: E402
from hookrun.events import topics  # noqa: E402
from hookrun.events.kafka import partitions_of, security_settings  # noqa: E402

GH_SECRET = "chaos-gh-secret"
WHSEC = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"
TRIGGER = "chaos"
FINISHED = b"hookrun.run.finished"


POISON_TRIGGER = "chaos-poison"
BULKY_TRIGGER = "chaos-bulky"
#: Writes HOOKRUN_OUTPUT: a string of argv[1] bytes inside argv[2] nested lists.
SPEW = (
    "import json, os, sys\n"
    "doc = 'x' * int(sys.argv[1])\n"
    "for _ in range(int(sys.argv[2])): doc = [doc]\n"
    "json.dump(doc, open(os.environ['HOOKRUN_OUTPUT'], 'w'))\n"
)
#: Poisonous launches: trigger, body, and whether the gateway must acknowledge them.
POISON: dict[str, tuple[str, bytes, bool]] = {
    "body nested 300 deep": (TRIGGER, b"[" * 300 + b"]" * 300, False),
    "output over the size limit": (POISON_TRIGGER, b'{"bytes": 2000000, "depth": 0}', True),
    "output nested 300 deep": (POISON_TRIGGER, b'{"bytes": 1, "depth": 300}', True),
    "outputs past a Kafka message": (BULKY_TRIGGER, b"{}", True),
}


def config_text(receiver: Receiver) -> str:
    """The chaos trigger (GitHub HMAC, a no-op step) and two that make poisonous outputs, each
    notifying the recording receiver."""
    notify = f'[{{url: "{receiver.url("/hooks/chaos")}", secret: "${{env:HOOKRUN_CHAOS_WHSEC}}"}}]'
    github = '[{preset: github, secret: "${env:HOOKRUN_CHAOS_GH_SECRET}"}]'
    spew = json.dumps(["python3", "-c", SPEW, "{parameters.bytes}", "{parameters.depth}"])
    return f"""
project: {{id: p-chaos, slug: chaos, name: Chaos}}
organization: {{id: o-chaos, slug: chaos, title: Chaos}}
environment: {{id: e-chaos, slug: chaos, type: DEVELOPMENT}}
steps:
  - {{name: noop, command: ["true"]}}
  - name: spew
    command: {spew}
    parameters: [{{name: bytes, type: integer}}, {{name: depth, type: integer, default: 0}}]
notifier:
  allow_private_targets: true
triggers:
  - id: {TRIGGER}
    title: Chaos
    conditions: {github}
    actions: [{{action: run_execution, step: noop}}]
    response: {{text: "Created run {{run_id}}"}}
    notifications: {notify}
  - id: {POISON_TRIGGER}
    title: An output no event can carry
    conditions: {github}
    actions:
      - {{action: run_execution, step: spew,
          parameters: {{bytes: "{{payload.bytes}}", depth: "{{payload.depth}}"}}}}
    response: {{text: "Created run {{run_id}}"}}
    notifications: {notify}
  - id: {BULKY_TRIGGER}
    title: Nine outputs of 1 MB, more than one Kafka message holds
    conditions: {github}
    actions: {
        json.dumps(
            [{"action": "run_execution", "step": "spew", "parameters": {"bytes": 1000000}}] * 9
        )
    }
    response: {{text: "Created run {{run_id}}"}}
    notifications: {notify}
"""


def signature(body: bytes) -> str:
    return "sha256=" + hmac.new(GH_SECRET.encode(), body, hashlib.sha256).hexdigest()


@dataclass
class Plan:
    """What one chaos run does."""

    launches: int = 5000
    rate: float = 50.0
    scale: int = 1
    #: Bound on the wait for every acknowledged run to be terminal and notified after the load.
    recovery_s: float = 120.0
    #: HOOKRUN_RUNNER_LEASE_S for the runners (None: the service default, 30 s).
    lease_s: float | None = None
    #: Seconds a killed instance stays down. With two instances, longer than the runner's
    #: session timeout (10 s), so the survivor takes the partitions before it comes back.
    down_s: float | None = None
    #: Seconds the broker stays stopped: longer than the producers' send timeout (11 s) with
    #: its start-up, so publishes do fail during the outage.
    broker_down_s: float = 5.0
    #: Rounds of poisonous launches (one of each kind in POISON) sent mid-load.
    poison: int = 0
    #: 1: one broker, restarted cleanly; 3: a cluster whose run-topic leader is killed -9.
    brokers: int = 1

    @property
    def load_s(self) -> float:
        return self.launches / self.rate


#: The notifier's retry schedule here: every retry of a delivery fits in the recovery window.
CHAOS_RETRY_SCHEDULE_S = "0,1,2,5,10,10,10,10,10,10"


@dataclass
class Report:
    """The counts of one chaos run, and whether the requirements held."""

    launches: int = 0
    rate: float = 0.0
    scale: int = 1
    brokers: int = 1
    load_seconds: float = 0.0
    accepted_202: int = 0
    non_202: dict[str, int] = field(default_factory=dict)
    non_202_sent_s: dict[str, str] = field(default_factory=dict)
    terminal_in_run_info: int = 0
    run_info_statuses: dict[str, int] = field(default_factory=dict)
    notified: int = 0
    deliveries: int = 0
    duplicate_deliveries: int = 0
    unsigned_deliveries: int = 0
    pending: int = 0
    not_notified: int = 0
    run_finished_events: int = 0
    run_finished_statuses: dict[str, int] = field(default_factory=dict)
    runs_without_run_finished: int = 0
    duplicate_run_finished: int = 0
    conflicting_terminal_status: int = 0
    unacknowledged_runs_finished: int = 0
    #: Event types of (up to 20) acknowledged runs left pending, as found on Kafka.
    pending_runs: dict[str, list[str]] = field(default_factory=dict)
    #: The same for (up to 20) acknowledged runs never notified, with each attempt's outcome.
    unnotified_runs: dict[str, list[str]] = field(default_factory=dict)
    recovery_seconds: float = 0.0
    faults: list[dict[str, Any]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    #: On failure: hookrun's own warnings and errors from each service's log (last ones).
    service_warnings: dict[str, list[str]] = field(default_factory=dict)
    #: Poisonous launches by kind: the gateway's answers, and the acknowledged runs' outcomes.
    poison_answers: dict[str, dict[str, int]] = field(default_factory=dict)
    poison_outcomes: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return not self.failures

    def judge(self) -> None:
        """Fill ``failures`` from the requirements."""
        checks = [
            (self.accepted_202 > 0, "no launch was acknowledged"),
            (self.pending == 0, f"{self.pending} acknowledged runs still pending"),
            (
                self.terminal_in_run_info == self.accepted_202,
                f"{self.accepted_202 - self.terminal_in_run_info} acknowledged runs not terminal",
            ),
            (self.not_notified == 0, f"{self.not_notified} acknowledged runs never notified"),
            (
                self.runs_without_run_finished == 0,
                f"{self.runs_without_run_finished} acknowledged runs without RunFinished",
            ),
            (
                self.conflicting_terminal_status == 0,
                f"{self.conflicting_terminal_status} runs with two different terminal statuses",
            ),
            (self.unsigned_deliveries == 0, f"{self.unsigned_deliveries} unverified deliveries"),
            (
                all(
                    POISON[kind][2] or "202" not in answers
                    for kind, answers in self.poison_answers.items()
                ),
                "a poisonous body was acknowledged",
            ),
            (
                all("SUCCESS" not in o and "none" not in o for o in self.poison_outcomes.values()),
                f"a poisonous run succeeded or has no RunFinished: {self.poison_outcomes}",
            ),
            (
                all(f.get("ok") for f in self.faults),
                "a fault could not be injected: "
                + "; ".join(f"{f['what']}: {f.get('error')}" for f in self.faults if not f["ok"]),
            ),
        ]
        self.failures = [why for ok, why in checks if not ok]

    def table(self) -> str:
        rows: list[tuple[str, object]] = [
            ("launches sent", self.launches),
            ("202 (acknowledged runs)", self.accepted_202),
            ("non-202 by code", self.non_202 or "-"),
            ("non-202 sent at (s into the load: how many)", self.non_202_sent_s or "-"),
            ("runs terminal in run info", self.terminal_in_run_info),
            ("run-info statuses", self.run_info_statuses),
            ("runs notified", self.notified),
            ("deliveries received", self.deliveries),
            ("duplicate deliveries (same webhook-id)", self.duplicate_deliveries),
            ("runs still pending", self.pending),
            ("acknowledged runs not notified", self.not_notified),
            ("RunFinished events", self.run_finished_events),
            ("RunFinished statuses", self.run_finished_statuses),
            ("runs with a duplicate RunFinished (same status)", self.duplicate_run_finished),
            ("runs with two different terminal statuses", self.conflicting_terminal_status),
            ("unacknowledged launches that ran anyway", self.unacknowledged_runs_finished),
            ("recovery window used (s)", round(self.recovery_seconds, 1)),
        ]
        for kind, answers in self.poison_answers.items():
            rows.append((f"poison: {kind}", f"{answers} -> {self.poison_outcomes.get(kind, '-')}"))
        width = max(len(k) for k, _ in rows)
        lines = [
            f"chaos: {self.launches} launches at {self.rate:g}/s, scale {self.scale}, "
            f"{self.brokers} broker{'s' if self.brokers > 1 else ''}, "
            f"load {self.load_seconds:.1f} s"
        ]
        lines += [f"  {k.ljust(width)}  {v}" for k, v in rows]
        lines.append("  faults:")
        lines += [
            f"    {f['at_s']:6.1f} s  {f['what']:<28} {'ok' if f['ok'] else 'FAILED'}"
            f"  (back after {f['took_s']:.1f} s){f.get('detail', '')}"
            for f in self.faults
        ]
        for run_id, types in self.pending_runs.items():
            lines.append(f"  pending {run_id}: {' '.join(types) or 'no events'}")
        for run_id, types in self.unnotified_runs.items():
            lines.append(f"  not notified {run_id}: {' '.join(types) or 'no events'}")
        for service, found in self.service_warnings.items():
            lines.append(f"  {service}: {len(found)} warnings/errors of hookrun (last ones)")
            lines += [f"    {line}" for line in found[-25:]]
        lines.append("PASS" if self.passed else "FAIL: " + "; ".join(self.failures))
        return "\n".join(lines)


class Deliveries:
    """Records what the receiver got: webhook-ids and terminal statuses per run."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.by_webhook_id: Counter[str] = Counter()
        self.statuses: dict[str, set[str]] = defaultdict(set)
        self.unverified = 0

    def record(self, request: Received) -> None:
        try:
            doc = request.json()
        except ValueError:
            doc = {}
        with self.lock:
            if not request.verified:
                self.unverified += 1
            self.by_webhook_id[request.headers.get("webhook-id", "?")] += 1
            self.statuses[str(doc.get("id"))].add(str(doc.get("status")))


class ChaosSystem:
    """An own broker plus every service instance as `make run` starts them, killable one by one."""

    def __init__(self, root: Path, plan: Plan) -> None:
        self.root = root
        # Executions run as another user (nobody), which must reach the execution directories.
        root.chmod(0o755)
        self.plan = plan
        self.namespace = f"chaos-{int(time.time())}"
        self.kafka: LocalKafka | LocalKafkaCluster = (
            LocalKafkaCluster(root / "kafka", plan.brokers, die_with_parent=True)
            if plan.brokers > 1
            else LocalKafka(root / "kafka", port=free_port(), die_with_parent=True)
        )
        self.deliveries = Deliveries()
        # Only what the report needs is kept: 5,000 recorded requests would make the receiver's
        # per-path count quadratic.
        self.receiver = Receiver([WHSEC], on_request=self.deliveries.record)
        self.receiver.requests = _Discard()  # type: ignore[assignment]
        # A notifier killed mid-request resets its connection: expected, not worth a traceback.
        self.receiver._server.handle_error = lambda request, address: None  # type: ignore[method-assign]
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.procs: dict[str, list[ServiceProcess]] = {}
        #: Set by stop(): a fault still in progress must not start a process afterwards.
        self.stopping = threading.Event()

    def _env(self) -> dict[str, str]:
        config = self.root / "hookrun.yaml"
        config.write_text(config_text(self.receiver))
        env = {
            "HOOKRUN_CONFIG": str(config),
            "KAFKA_BOOTSTRAP_SERVERS": self.kafka.bootstrap,
            "HOOKRUN_PORT": str(self.port),
            "HOOKRUN_NAMESPACE": self.namespace,
            "HOOKRUN_ADMIN_TOKEN": "chaos-admin-token",
            "HOOKRUN_CHAOS_GH_SECRET": GH_SECRET,
            "HOOKRUN_CHAOS_WHSEC": WHSEC,
        }
        if self.plan.lease_s is not None:
            env["HOOKRUN_RUNNER_LEASE_S"] = str(self.plan.lease_s)
        return env

    def start(self) -> ChaosSystem:
        self.kafka.start()
        self.receiver.start()
        env = self._env()
        logs = self.root / "logs"
        status_ports = [free_port() for _ in range(self.plan.scale)]
        env["HOOKRUN_STATUS_URL"] = f"http://127.0.0.1:{status_ports[0]}"
        for i in range(self.plan.scale):
            n = i + 1
            # status on SQLite: each instance is a full replica with its own file (status.md)
            status_env = {
                **env,
                "HOOKRUN_STATUS_PORT": str(status_ports[i]),
                "HOOKRUN_DATABASE_URL": f"sqlite:///{self.root / f'status-{n}.db'}",
            }
            health = free_port()
            runner_env = {
                **env,
                "HOOKRUN_RUNNER_HEALTH_PORT": str(health),
                "HOOKRUN_DATA_DIR": str(self.root / f"data-{n}"),
            }
            nhealth = free_port()
            notifier_env = {
                **env,
                "HOOKRUN_NOTIFIER_HEALTH_PORT": str(nhealth),
                # Retries within the recovery window: an attempt that times out on a starved
                # machine would otherwise wait for Svix's 5-minute step.
                "HOOKRUN_NOTIFIER_RETRY_SCHEDULE_S": CHAOS_RETRY_SCHEDULE_S,
            }
            for service, senv, url in [
                ("status", status_env, f"http://127.0.0.1:{status_ports[i]}/healthz"),
                ("runner", runner_env, f"http://127.0.0.1:{health}/healthz"),
                ("notifier", notifier_env, f"http://127.0.0.1:{nhealth}/healthz"),
            ]:
                proc = ServiceProcess(
                    f"{service}-{n}", f"hookrun.{service}", senv, logs, health_url=url
                )
                self.procs.setdefault(service, []).append(proc)
        self.procs["gateway"] = [
            ServiceProcess(
                "gateway", "hookrun.gateway", env, logs, health_url=f"{self.base}/healthz"
            )
        ]
        everything = [p for group in self.procs.values() for p in group]
        threads = [threading.Thread(target=p.start, kwargs={"wait_s": 180}) for p in everything]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for p in everything:  # a start that failed in its thread left no running process
            if p.proc is None or p.proc.poll() is not None:
                raise RuntimeError(f"{p.name} did not start:\n{p.tail()}")
            p.wait_healthy(180)
        for runner in self.procs["runner"]:  # partitions held: the first launches run at once
            runner.wait_healthy(180, ready_key="assigned")
        return self

    def stop(self) -> None:
        """Stop every process started, by pid, then the receiver and the broker."""
        self.stopping.set()
        for name in ("gateway", "notifier", "runner", "status"):
            for proc in self.procs.get(name, []):
                with contextlib.suppress(Exception):
                    proc.stop()
        with contextlib.suppress(Exception):
            self.receiver.stop()
        with contextlib.suppress(Exception):
            self.kafka.stop(timeout=15)

    def kill_and_restart(self, service: str, down_s: float) -> None:
        """SIGKILL the first instance of ``service`` (its process group), wait, start it again."""
        proc = self.procs[service][0]
        proc.kill()
        if not self.stopping.wait(down_s):
            proc.start(wait_s=180)

    def restart_broker(self, down_s: float) -> None:
        """Stop the broker (SIGTERM, a clean shutdown) and start it on the same data dir and port."""
        self.kafka.stop(timeout=30)
        if not self.stopping.wait(down_s):
            self.kafka.start(timeout=180)

    def kill_runs_leader(self, down_s: float) -> str:
        """SIGKILL the cluster node leading the most partitions of the run topic, start it again
        after ``down_s``; return which node it was."""
        assert isinstance(self.kafka, LocalKafkaCluster)
        runs = topics.named(topics.RUNS, self.namespace)
        leaders = asyncio.run(self.kafka.leaders(runs))
        if not leaders:
            raise RuntimeError(f"no partition of {runs} has a leader")
        node_id, led = leaders.most_common(1)[0]
        self.kafka.kill_and_restart(self.kafka.node(node_id), down_s, self.stopping)
        return f"  node {node_id}, leader of {led} of {sum(leaders.values())} partitions"


class _Discard(list):  # type: ignore[type-arg]
    """A list that keeps nothing (the receiver appends every request to ``requests``)."""

    def append(self, item: object) -> None:
        pass


@dataclass
class Load:
    """What the open-loop sender saw."""

    seconds: float = 0.0
    statuses: Counter[str] = field(default_factory=Counter)
    run_ids: list[str] = field(default_factory=list)
    #: Per non-202 outcome, how many of its launches were sent in each second of the load, to
    #: set beside the faults' times.
    seconds_sent: dict[str, Counter[int]] = field(default_factory=dict)

    def count(self, outcome: str, sent_s: float) -> None:
        self.statuses[outcome] += 1
        if outcome != "202":
            self.seconds_sent.setdefault(outcome, Counter())[int(sent_s)] += 1

    def spans(self, outcome: str) -> str:
        """When the launches of ``outcome`` were sent: runs of consecutive seconds and how
        many in each run, as ``"15-21 s: 250, 84 s: 11"``."""
        found: list[list[int]] = []  # [first second, last second, launches]
        for second, n in sorted(self.seconds_sent.get(outcome, Counter()).items()):
            if found and second == found[-1][1] + 1:
                found[-1][1:] = [second, found[-1][2] + n]
            else:
                found.append([second, second, n])
        return ", ".join(f"{a}{'' if a == b else f'-{b}'} s: {n}" for a, b, n in found)


async def send_launches(port: int, count: int, rate: float, *, connections: int = 256) -> Load:
    """Send ``count`` signed launches at ``rate``/s, open loop; each request has its own payload.

    A refused connection or a cut-off answer (the gateway killed) counts as ``error``; a request
    still unanswered after 30 s counts as ``timeout``. Neither is an acknowledged run.
    """
    load = Load()
    idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    slots = asyncio.Semaphore(connections)
    path = f"/api/v0/launch/{TRIGGER}/"
    start_id = f"{time.time_ns():x}"

    async def one(i: int) -> None:
        body = orjson.dumps({"n": i, "sent": time.time()})
        request = build_request(
            "127.0.0.1",
            port,
            path,
            body,
            {
                "Content-Type": "application/json",
                "X-Hub-Signature-256": signature(body),
                # As GitHub sends it: the launch and its dedupe record go in one transaction.
                "X-GitHub-Delivery": f"chaos-{i}-{start_id}",
            },
        )
        async with slots:
            conn = idle.pop() if idle else None
            try:
                if conn is None:
                    conn = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
                status, answer = await asyncio.wait_for(roundtrip(*conn, request), 30)
            except (OSError, asyncio.IncompleteReadError, ValueError):
                load.count("error", i / rate)
                if conn is not None:
                    conn[1].close()
                return
            except TimeoutError:
                load.count("timeout", i / rate)
                if conn is not None:
                    conn[1].close()
                return
            idle.append(conn)
        load.count(str(status), i / rate)
        if status == 202:
            load.run_ids.append(answer.decode().removeprefix("Created run "))

    start = time.perf_counter()
    tasks = []
    for i in range(count):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i)))
    await asyncio.gather(*tasks)
    load.seconds = time.perf_counter() - start
    for _, writer in idle:
        writer.close()
    return load


def _post_through_restarts(
    client: httpx.Client, url: str, body: bytes, headers: dict[str, str], within_s: float = 20.0
) -> httpx.Response | None:
    """POST, again while the connection is refused (for up to ``within_s``): a refused
    connection never delivered the request, so it cannot start a second run. None when no answer
    came (a cut connection or a timeout)."""
    deadline = time.monotonic() + within_s
    while True:
        try:
            return client.post(url, content=body, headers=headers)
        except httpx.ConnectError:
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.5)
        except httpx.HTTPError:
            return None


def send_poison(port: int, plan: Plan, started: float) -> list[tuple[str, str, str | None]]:
    """Send ``plan.poison`` rounds of POISON spread over the middle fifth of the load.

    Returns (kind, answer, run id if acknowledged) per launch.
    """
    sent: list[tuple[str, str, str | None]] = []
    kinds = list(POISON.items()) * plan.poison
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
        for i, (kind, (trigger, body, _)) in enumerate(kinds):
            at = started + plan.load_s * (0.4 + 0.2 * i / max(1, len(kinds)))
            time.sleep(max(0.0, at - time.monotonic()))
            headers = {"content-type": "application/json", "X-Hub-Signature-256": signature(body)}
            r = _post_through_restarts(client, f"/api/v0/launch/{trigger}/", body, headers)
            if r is None:
                sent.append((kind, "error", None))
                continue
            run_id = r.text.removeprefix("Created run ") if r.status_code == 202 else None
            sent.append((kind, str(r.status_code), run_id))
    return sent


async def poll_run_info(
    base: str, runs: dict[str, str], deliveries: Deliveries, deadline: float
) -> dict[str, str]:
    """Poll signed run info until every run (run id -> trigger id) is terminal and notified, or
    ``deadline``; run id -> status."""
    statuses: dict[str, str] = dict.fromkeys(runs, "pending")
    limit = asyncio.Semaphore(16)
    async with httpx.AsyncClient(timeout=15) as client:

        async def ask(run_id: str) -> None:
            body = orjson.dumps({"run_id": run_id})
            headers = {"content-type": "application/json", "X-Hub-Signature-256": signature(body)}
            url = f"{base}/api/v0/launch/{runs[run_id]}/run/"
            async with limit:
                try:
                    r = await client.post(url, content=body, headers=headers)
                except httpx.HTTPError:
                    return
            if r.status_code == 200:
                statuses[run_id] = r.json()["status"]

        while True:
            waiting = [r for r, s in statuses.items() if s == "pending"]
            await asyncio.gather(*(ask(r) for r in waiting))
            with deliveries.lock:
                unnotified = [r for r in runs if r not in deliveries.statuses]
            if (
                not any(s == "pending" for s in statuses.values()) and not unnotified
            ) or time.monotonic() > deadline:
                return statuses
            await asyncio.sleep(1.0)


def _trail_entry(record: Any) -> str:
    """A record's event type, and for a delivery attempt its outcome and error."""
    ce_type = bytes(dict(record.headers or ()).get("ce_type", b"?")).decode()
    entry = ce_type.removeprefix("hookrun.")
    if ce_type == "hookrun.delivery.attempted":
        data = orjson.loads(record.value)
        entry += f"({data.get('outcome')}: {data.get('error') or data.get('status_code')})"
    return entry


async def run_finished_by_run(
    bootstrap: str, namespace: str, trail: dict[str, list[str]] | None = None
) -> dict[str, list[str]]:
    """Every RunFinished on the namespace's runs topic, read back from Kafka: run id -> statuses.

    ``trail``, if given, receives every event type of every run, in log order (for the report
    of runs that did not finish).
    """
    topic = topics.named(topics.RUNS, namespace)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        **security_settings(),
        enable_auto_commit=False,
        group_id=None,
        max_partition_fetch_bytes=8 * 1024 * 1024,
        fetch_max_bytes=64 * 1024 * 1024,
    )
    await consumer.start()
    found: dict[str, list[str]] = defaultdict(list)
    try:
        tps = await partitions_of(consumer, topic)
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        remaining = {tp for tp in tps if ends[tp] > 0}
        while remaining:
            batch = await consumer.getmany(*remaining, timeout_ms=1000, max_records=5000)
            for tp, records in batch.items():
                for record in records:
                    headers = dict(record.headers or ())
                    if trail is not None:
                        trail.setdefault(record.key.decode(), []).append(_trail_entry(record))
                    if headers.get("ce_type") == FINISHED:
                        found[record.key.decode()].append(orjson.loads(record.value)["status"])
                if records and records[-1].offset + 1 >= ends[tp]:
                    remaining.discard(tp)
    finally:
        await consumer.stop()
    return found


def schedule(plan: Plan) -> list[tuple[float, str]]:
    """Fault times (seconds into the load) and what: every service once, the broker once (in a
    cluster: the node leading the most run-topic partitions, killed -9)."""
    # The gateway first, so it is back (answering 503s) while the broker is away.
    broker = "kill -9 runs leader" if plan.brokers > 1 else "restart broker"
    faults = ["kill gateway", "kill runner", "kill notifier", "kill status", broker]
    step = plan.load_s / (len(faults) + 1)
    return [(step * (i + 1), what) for i, what in enumerate(faults)]


def inject(
    system: ChaosSystem, plan: Plan, started: float, log: Callable[[str], None]
) -> list[dict[str, Any]]:
    """Inject the faults on schedule; a killed service comes back in a thread of its own.

    The broker is restarted from the calling thread: LocalKafka asks Linux to stop the broker
    when the *thread* that started it exits (PR_SET_PDEATHSIG follows the thread), so a broker
    started from a short-lived thread would die with it.
    """
    done: list[dict[str, Any]] = []
    down_s = plan.down_s if plan.down_s is not None else (12.0 if plan.scale > 1 else 1.0)

    def fault(entry: dict[str, Any], action: Callable[[], None]) -> None:
        t0 = time.monotonic()
        try:
            action()
        except Exception as exc:  # reported as a failed requirement, never swallowed
            entry.update(ok=False, error=f"{type(exc).__name__}: {exc}")
        entry["took_s"] = time.monotonic() - t0
        log(
            f"{time.monotonic() - started:6.1f} s  {entry['what']}: back after {entry['took_s']:.1f} s"
        )

    threads = []
    for at, what in schedule(plan):
        delay = started + at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        entry: dict[str, Any] = {"what": what, "at_s": time.monotonic() - started, "ok": True}
        done.append(entry)
        log(f"{entry['at_s']:6.1f} s  {what}")
        if what == "restart broker":
            fault(entry, lambda: system.restart_broker(plan.broker_down_s))
            continue
        if what == "kill -9 runs leader":

            def kill_leader(entry: dict[str, Any] = entry) -> None:
                entry["detail"] = system.kill_runs_leader(plan.broker_down_s)

            fault(entry, kill_leader)
            continue
        service = what.removeprefix("kill ")
        wait = 1.0 if service == "gateway" else down_s
        thread = threading.Thread(
            target=fault, args=(entry, lambda s=service, w=wait: system.kill_and_restart(s, w))
        )
        thread.start()
        threads.append(thread)
    for thread in threads:
        thread.join()
    return done


def run(plan: Plan, root: Path, log: Callable[[str], None] = print) -> Report:
    """Start everything, load, inject faults, recover, count; stop everything in any case."""
    report = Report(launches=plan.launches, rate=plan.rate, scale=plan.scale, brokers=plan.brokers)
    system = ChaosSystem(root, plan)
    try:
        t0 = time.monotonic()
        system.start()
        log(f"system up in {time.monotonic() - t0:.1f} s (Kafka {system.kafka.bootstrap})")
        started = time.monotonic()
        loads: list[Load] = []
        sender = threading.Thread(
            target=lambda: loads.append(
                asyncio.run(send_launches(system.port, plan.launches, plan.rate))
            ),
            daemon=True,
        )
        sender.start()
        poisoned: list[tuple[str, str, str | None]] = []
        poisoner = threading.Thread(
            target=lambda: poisoned.extend(send_poison(system.port, plan, started)), daemon=True
        )
        poisoner.start()
        report.faults = inject(system, plan, started, log)
        sender.join()
        poisoner.join()
        if not loads:
            raise RuntimeError("the load generator failed (see its traceback above)")
        [load] = loads
        log(f"load done in {load.seconds:.1f} s: {dict(load.statuses)}")
        runs = dict.fromkeys(load.run_ids, TRIGGER)
        for kind, answer, run_id in poisoned:
            load.statuses[answer] += 1
            report.poison_answers.setdefault(kind, {}).setdefault(answer, 0)
            report.poison_answers[kind][answer] += 1
            if run_id is not None:
                runs[run_id] = POISON[kind][0]
        report.load_seconds = load.seconds
        report.accepted_202 = load.statuses.get("202", 0)
        report.non_202 = {k: v for k, v in sorted(load.statuses.items()) if k != "202"}
        report.non_202_sent_s = {k: load.spans(k) for k in sorted(load.seconds_sent)}

        t1 = time.monotonic()
        infos = asyncio.run(
            poll_run_info(system.base, runs, system.deliveries, t1 + plan.recovery_s)
        )
        report.recovery_seconds = time.monotonic() - t1
        log(f"recovery window: {report.recovery_seconds:.1f} s")
        report.run_info_statuses = dict(Counter(infos.values()))
        report.pending = sum(1 for s in infos.values() if s == "pending")
        report.terminal_in_run_info = len(infos) - report.pending

        with system.deliveries.lock:
            by_id = dict(system.deliveries.by_webhook_id)
            notified = dict(system.deliveries.statuses)
            report.unsigned_deliveries = system.deliveries.unverified
        acked = set(runs)
        report.deliveries = sum(by_id.values())
        report.duplicate_deliveries = sum(n - 1 for n in by_id.values() if n > 1)
        report.notified = len(acked & notified.keys())
        report.not_notified = len(acked - notified.keys())

        trail: dict[str, list[str]] = {}
        finished = asyncio.run(run_finished_by_run(system.kafka.bootstrap, system.namespace, trail))
        pending = sorted(r for r, s in infos.items() if s == "pending")[:20]
        report.pending_runs = {r: trail.get(r, []) for r in pending}
        unnotified = sorted(acked - notified.keys())[:20]
        report.unnotified_runs = {r: trail.get(r, []) for r in unnotified}
        report.run_finished_events = sum(len(v) for v in finished.values())
        report.run_finished_statuses = dict(Counter(s for v in finished.values() for s in v))
        report.runs_without_run_finished = len(acked - finished.keys())
        report.duplicate_run_finished = sum(
            1 for v in finished.values() if len(v) > 1 and len(set(v)) == 1
        )
        notified_conflicts = {r for r, s in notified.items() if len(s) > 1}
        report.conflicting_terminal_status = len(
            {r for r, v in finished.items() if len(set(v)) > 1} | notified_conflicts
        )
        report.unacknowledged_runs_finished = len(finished.keys() - acked)
        for kind, _, run_id in poisoned:
            if run_id is not None:
                outcomes = report.poison_outcomes.setdefault(kind, {})
                for status in finished.get(run_id, ["none"]):
                    outcomes[status] = outcomes.get(status, 0) + 1
        report.judge()
        if not report.passed:
            report.service_warnings = service_warnings(system.root / "logs")
        return report
    finally:
        system.stop()


def service_warnings(logs: Path) -> dict[str, list[str]]:
    """hookrun's own WARNING/ERROR lines of each service log (aiokafka's retries left out).

    A text line reads `<time> <LEVEL> <service> <logger>: <message>` (hookrun.events.logs).
    """
    out = {}
    for path in sorted(logs.glob("*.log")):
        lines = [
            line[:300]
            for line in path.read_text(errors="replace").splitlines()
            if re.search(r" (WARNING|ERROR) \w+ hookrun", line)
        ]
        if lines:
            out[path.stem] = lines
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python bench/chaos.py", description=__doc__)
    parser.add_argument("--launches", type=int, default=5000)
    parser.add_argument("--rate", type=float, default=50.0, help="launches per second")
    parser.add_argument("--scale", type=int, choices=(1, 2), default=1)
    parser.add_argument(
        "--brokers", type=int, choices=(1, 3), default=1, help="3: a cluster, its leader killed"
    )
    parser.add_argument("--recovery-s", type=float, default=120.0)
    parser.add_argument("--lease-s", type=float, default=None, help="runner lease (default 30)")
    parser.add_argument("--broker-down-s", type=float, default=5.0)
    parser.add_argument(
        "--poison", type=int, default=0, help="rounds of poisonous launches sent mid-load"
    )
    parser.add_argument("--report", type=Path, default=ROOT / "bench/results/chaos.json")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs)")
    args = parser.parse_args(argv)
    plan = Plan(
        args.launches,
        args.rate,
        args.scale,
        args.recovery_s,
        args.lease_s,
        broker_down_s=args.broker_down_s,
        poison=args.poison,
        brokers=args.brokers,
    )
    root = Path(tempfile.mkdtemp(prefix="hookrun-chaos-"))
    print(f"chaos: temp dir {root}", flush=True)
    try:
        report = run(plan, root, log=lambda line: print(line, flush=True))
    except KeyboardInterrupt:
        print("interrupted; everything started was stopped", file=sys.stderr)
        return 130
    except BaseException:
        print(f"chaos: logs kept in {root}", file=sys.stderr)
        raise
    print(report.table(), flush=True)
    if args.keep or not report.passed:
        print(f"chaos: logs kept in {root}/logs", flush=True)
    else:
        shutil.rmtree(root, ignore_errors=True)
    args.report.parent.mkdir(parents=True, exist_ok=True)
    doc = {**asdict(report), "passed": report.passed, "plan": asdict(plan)}
    args.report.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"report: {args.report}", flush=True)
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
