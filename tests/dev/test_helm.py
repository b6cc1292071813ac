"""The Helm chart (deploy/helm/hookrun) renders, lints and validates against Kubernetes' schemas,
with its default values and with deploy/helm/values-secured.yaml, and what it renders agrees
with the services: probes and scrapes on the ports they serve, only variables they read, files
where the Kafka settings say, and no secret outside the Secret."""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import httpx
import kubernetes_validate
import pytest
import yaml

from hookrun.config.loader import parse_config
from hookrun.dev.helm import helm_binary
from hookrun.dev.kafka_net import free_port
from hookrun.dev.kafka_secure import USERNAME
from hookrun.dev.procs import ServiceProcess
from hookrun.dev.pytest_kafka import missing_part, new_namespace
from tests.dev.test_compose import COMPOSE, ROOT, SERVICES, SHARED, read_by

CHART = ROOT / "deploy/helm/hookrun"
SECURED = ROOT / "deploy/helm/values-secured.yaml"
#: Values files rendered: the defaults, the documented secured example, and mutual TLS.
FILES = {
    "default": None,
    "secured": SECURED,
    "mtls": Path(__file__).with_name("helm-values-mtls.yaml"),
}
VALUES = {name: ["-f", str(path)] if path else [] for name, path in FILES.items()}
#: The oldest Kubernetes the chart supports (Chart.yaml's kubeVersion) and the newest schemas.
KUBERNETES = ["1.29", kubernetes_validate.latest_version()]
#: The setting each service listens on for /healthz, /readyz and /metrics, and its address.
LISTENS = {
    "gateway": ("hookrun_port", "hookrun_host"),
    "status": ("hookrun_status_port", "hookrun_status_host"),
    "runner": ("hookrun_metrics_port", "hookrun_metrics_host"),
    "notifier": ("hookrun_metrics_port", "hookrun_metrics_host"),
}
#: What ``hookrun topics`` (hookrun.cli) reads besides the shared Kafka settings.
TOPICS_CLI = {"KAFKA_BOOTSTRAP_SERVERS", "HOOKRUN_NAMESPACE"}


@pytest.fixture(scope="module")
def helm() -> Path:
    binary = helm_binary()
    if not binary.exists():
        missing_part(f"helm is not built at {binary}: run `make setup-helm` (needs Go)")
    return binary


def run_helm(helm: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(helm), *args], capture_output=True, text=True, timeout=60, check=False
    )


def render(helm: Path, *args: str) -> list[dict[str, Any]]:
    result = run_helm(helm, "template", "hookrun", str(CHART), *args)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture(scope="module", params=VALUES)
def variant(request: pytest.FixtureRequest, helm: Path) -> tuple[str, list[dict[str, Any]]]:
    return request.param, render(helm, *VALUES[request.param])


def values_of(name: str) -> dict[str, Any]:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    if FILES[name] is not None:
        _merge(values, yaml.safe_load(FILES[name].read_text()))
    return values


def _merge(into: dict[str, Any], over: dict[str, Any]) -> None:
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


def of_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [doc for doc in docs if doc["kind"] == kind]


def deployments(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {
        d["metadata"]["labels"]["app.kubernetes.io/component"]: d
        for d in of_kind(docs, "Deployment")
    }


def container(workload: dict[str, Any]) -> dict[str, Any]:
    (only,) = workload["spec"]["template"]["spec"]["containers"]
    return only


def secret_data(docs: list[dict[str, Any]]) -> dict[str, str]:
    (secret,) = of_kind(docs, "Secret")
    return {k: base64.b64decode(v).decode() for k, v in secret.get("data", {}).items()}


def config_text(docs: list[dict[str, Any]]) -> str:
    (config,) = of_kind(docs, "ConfigMap")
    return config["data"]["hookrun.yaml"]


def pod_env(docs: list[dict[str, Any]], workload: dict[str, Any]) -> dict[str, str]:
    """The container's environment as the pod gets it, secret references resolved."""
    secrets = secret_data(docs)
    env = {}
    for var in container(workload)["env"]:
        if "value" in var:
            env[var["name"]] = var["value"]
        else:
            ref = var["valueFrom"]["secretKeyRef"]
            if ref["key"] in secrets:
                env[var["name"]] = secrets[ref["key"]]
            else:
                assert ref.get("optional"), f"{var['name']}: no key {ref['key']} in the Secret"
    return env


class TestChart:
    @pytest.mark.parametrize("values", VALUES)
    def test_helm_lint_finds_nothing(self, helm, values):
        result = run_helm(helm, "lint", "--strict", str(CHART), *VALUES[values])
        assert result.returncode == 0, result.stdout + result.stderr

    @pytest.mark.parametrize("version", KUBERNETES)
    def test_every_manifest_is_valid_kubernetes(self, variant, version):
        _, docs = variant
        assert {d["kind"] for d in docs} == {
            "ConfigMap", "Deployment", "Job", "Secret", "Service"
        }  # fmt: skip
        for doc in docs:
            # strict: a misspelt or misplaced field is an error, not ignored by the API server
            kubernetes_validate.validate(doc, version, strict=True)

    def test_the_chart_declares_the_oldest_kubernetes_it_is_validated_against(self):
        chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
        assert chart["kubeVersion"] == f">={KUBERNETES[0]}.0-0"


class TestServices:
    def test_a_deployment_per_service_with_the_replicas_asked_for(self, variant):
        name, docs = variant
        values = values_of(name)
        found = deployments(docs)
        assert set(found) == set(SERVICES)
        for service, workload in found.items():
            assert workload["spec"]["replicas"] == values[service]["replicas"]
            command = container(workload)["command"]
            assert command == ["python", "-m", f"hookrun.{service}"]

    def test_every_variable_the_chart_sets_is_one_the_service_reads(self, variant):
        _, docs = variant
        config = config_text(docs)
        for service, workload in deployments(docs).items():
            names = [var["name"] for var in container(workload)["env"]]
            assert len(names) == len(set(names)), f"{service} sets a variable twice"
            # OTEL_*: read by OpenTelemetry's SDK, which configures traces (DESIGN.md, 8)
            unread = {n for n in names if not n.startswith("OTEL_")} - read_by(service, config)
            assert unread == set(), service
        (job,) = of_kind(docs, "Job")
        assert {var["name"] for var in container(job)["env"]} - (SHARED | TOPICS_CLI) == set()

    def test_probes_and_scrapes_go_to_the_port_each_service_listens_on(self, variant, monkeypatch):
        _, docs = variant
        for service, workload in deployments(docs).items():
            spec = container(workload)
            ports = {p["name"]: p["containerPort"] for p in spec["ports"]}
            # The port and address the service itself takes from the pod's environment.
            with monkeypatch.context() as env:
                for name in read_by(service):
                    env.delenv(name, raising=False)
                for name, value in pod_env(docs, workload).items():
                    env.setenv(name, value)
                settings = SERVICES[service]()
            port_field, host_field = LISTENS[service]
            served = getattr(settings, port_field)
            assert getattr(settings, host_field) == "0.0.0.0", service
            for probe, path in (
                ("startupProbe", "/healthz"),
                ("livenessProbe", "/healthz"),
                ("readinessProbe", "/readyz"),
            ):
                get = spec[probe]["httpGet"]
                assert get["path"] == path, (service, probe)
                assert ports[get["port"]] == served, (service, probe)
            annotations = workload["spec"]["template"]["metadata"]["annotations"]
            assert annotations["prometheus.io/scrape"] == "true"
            assert annotations["prometheus.io/path"] == "/metrics"
            assert int(annotations["prometheus.io/port"]) == served, service

    def test_the_chart_runs_each_service_as_docker_compose_does(self, helm):
        docs = render(helm)
        for service, workload in deployments(docs).items():
            composed = COMPOSE["services"][service]
            assert container(workload)["command"] == composed["command"]
            env = pod_env(docs, workload)
            same = {
                "HOOKRUN_PORT",
                "HOOKRUN_STATUS_PORT",
                "HOOKRUN_METRICS_PORT",
                "HOOKRUN_DATA_DIR",
            }
            for name in same & env.keys():
                assert env[name] == str(composed["environment"][name]), (service, name)
        status = pod_env(docs, deployments(docs)["status"])["HOOKRUN_DATABASE_URL"]
        assert (
            f":-{status}}}" in COMPOSE["services"]["status"]["environment"]["HOOKRUN_DATABASE_URL"]
        )

    def test_services_reach_the_http_ports_and_the_gateway_forwards_to_status(self, variant):
        _, docs = variant
        services = {s["metadata"]["name"]: s for s in of_kind(docs, "Service")}
        found = deployments(docs)
        assert set(services) == {"hookrun-gateway", "hookrun-status"}
        for name, svc in services.items():
            component = name.removeprefix("hookrun-")
            labels = found[component]["spec"]["template"]["metadata"]["labels"]
            assert svc["spec"]["selector"].items() <= labels.items()
            (port,) = svc["spec"]["ports"]
            assert port["targetPort"] in {p["name"] for p in container(found[component])["ports"]}
        status = services["hookrun-status"]["spec"]["ports"][0]["port"]
        gateway = pod_env(docs, found["gateway"])
        assert gateway["HOOKRUN_STATUS_URL"] == f"http://hookrun-status:{status}"

    def test_no_service_links_and_no_api_token_in_any_pod(self, variant):
        _, docs = variant
        for workload in [*deployments(docs).values(), *of_kind(docs, "Job")]:
            pod = workload["spec"]["template"]["spec"]
            # a Service named hookrun-status would otherwise set HOOKRUN_STATUS_PORT=tcp://...
            assert pod["enableServiceLinks"] is False
            assert pod["automountServiceAccountToken"] is False


class TestSecurity:
    def test_pods_run_as_non_root_without_privileges_on_a_read_only_root(self, variant):
        _, docs = variant
        for workload in [*deployments(docs).values(), *of_kind(docs, "Job")]:
            pod = workload["spec"]["template"]["spec"]
            assert pod["securityContext"]["runAsNonRoot"] is True
            assert pod["securityContext"]["runAsUser"] != 0
            context = container(workload)["securityContext"]
            assert context["allowPrivilegeEscalation"] is False
            assert context["readOnlyRootFilesystem"] is True
            assert context["capabilities"]["drop"] == ["ALL"]

    def test_every_place_a_service_writes_is_a_writable_volume(self, variant):
        _, docs = variant
        for service, workload in deployments(docs).items():
            env = pod_env(docs, workload)
            writable = {
                m["mountPath"] for m in container(workload)["volumeMounts"] if not m.get("readOnly")
            }
            places = {"/tmp"}
            if service == "runner":
                places.add(env["HOOKRUN_DATA_DIR"])
            url = env.get("HOOKRUN_DATABASE_URL", "")
            if service == "status" and url.startswith("sqlite:///"):
                places.add(str(Path(url.removeprefix("sqlite:///")).parent))
            for place in places:
                assert any(place == m or place.startswith(m + "/") for m in writable), (
                    service,
                    place,
                )

    def test_secret_values_appear_nowhere_but_base64_in_the_secret(self, helm):
        docs = render(helm, *VALUES["secured"])
        secrets = values_of("secured")["secrets"]
        plain = [v for k, v in secrets.items() if k != "env" and v] + list(secrets["env"].values())
        assert len(plain) == 6
        text = yaml.safe_dump_all(docs)
        for value in plain:
            for line in value.strip().splitlines():
                assert line.strip() not in text
        data = secret_data(docs)
        assert len(data.pop("ui-session-key")) == 48  # made by the chart: none in the values
        assert set(data.values()) == set(plain)
        for workload in deployments(docs).values():
            env = {v["name"]: v for v in container(workload)["env"]}
            for name in ("HOOKRUN_ADMIN_TOKEN", "HOOKRUN_DATABASE_URL", *secrets["env"]):
                if name in env:
                    assert "secretKeyRef" in env[name]["valueFrom"], name
            # the password is a mounted file, never a variable
            assert "KAFKA_SASL_PASSWORD" not in env

    def test_every_status_replica_signs_dashboard_sessions_with_one_key(self, helm):
        docs = render(helm, *VALUES["secured"], "--set", "secrets.uiSessionKey=k")
        assert secret_data(docs)["ui-session-key"] == "k"
        made = render(helm, *VALUES["secured"])
        status = deployments(made)["status"]
        assert status["spec"]["replicas"] > 1
        env = {v["name"]: v for v in container(status)["env"]}
        assert env["HOOKRUN_UI_SESSION_KEY"]["valueFrom"]["secretKeyRef"]["key"] == "ui-session-key"
        assert (
            pod_env(made, status)["HOOKRUN_UI_SESSION_KEY"] == secret_data(made)["ui-session-key"]
        )

    def test_an_existing_secret_replaces_the_charts_own(self, helm):
        docs = render(helm, *VALUES["secured"], "--set", "secrets.existingSecret=hookrun-prod")
        assert of_kind(docs, "Secret") == []
        text = yaml.safe_dump_all(docs)
        for value in values_of("secured")["secrets"]["env"].values():
            assert value not in text
        names = set()
        for workload in [*deployments(docs).values(), *of_kind(docs, "Job")]:
            pod = workload["spec"]["template"]["spec"]
            names |= {v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}
            for var in container(workload)["env"]:
                if "valueFrom" in var:
                    names.add(var["valueFrom"]["secretKeyRef"]["name"])
        assert names == {"hookrun-prod"}

    def test_the_admin_token_and_database_url_reach_the_status_service_only(self, helm):
        docs = render(helm, *VALUES["secured"])
        for service, workload in deployments(docs).items():
            env = {v["name"] for v in container(workload)["env"]}
            has = {"HOOKRUN_ADMIN_TOKEN", "HOOKRUN_DATABASE_URL"} & env
            assert has == (has if service == "status" else set()), service
        status = pod_env(docs, deployments(docs)["status"])
        assert status["HOOKRUN_DATABASE_URL"].startswith("postgresql://")
        assert status["HOOKRUN_ADMIN_TOKEN"] == values_of("secured")["secrets"]["adminToken"]

    def test_kafka_files_are_mounted_from_the_secret_where_the_settings_say(self, variant):
        name, docs = variant
        secrets = secret_data(docs)
        kafka, given = values_of(name)["kafka"], values_of(name)["secrets"]
        tls = kafka["securityProtocol"] in ("SSL", "SASL_SSL")
        expected = {}
        if kafka["securityProtocol"].startswith("SASL_"):
            expected["KAFKA_SASL_PASSWORD_FILE"] = given["kafkaSaslPassword"]
        if tls and kafka["tls"]["ca"]:
            expected["KAFKA_SSL_CAFILE"] = given["kafkaCa"]
        if tls and kafka["tls"]["clientCertificate"]:
            expected["KAFKA_SSL_CERTFILE"] = given["kafkaCert"]
            expected["KAFKA_SSL_KEYFILE"] = given["kafkaKey"]
        assert expected or name == "default"
        for workload in [*deployments(docs).values(), *of_kind(docs, "Job")]:
            spec = container(workload)
            env = {v["name"]: v.get("value") for v in spec["env"]}
            volumes = {v["name"]: v for v in workload["spec"]["template"]["spec"]["volumes"]}
            files = {}
            for mount in spec.get("volumeMounts", []):
                source = volumes[mount["name"]].get("secret")
                for item in (source or {}).get("items", []):
                    files[f"{mount['mountPath']}/{item['path']}"] = item["key"]
            named = {k: v for k, v in env.items() if k.startswith("KAFKA_") and k.endswith("FILE")}
            assert {k: secrets[files[path]] for k, path in named.items()} == expected
            assert env["KAFKA_SECURITY_PROTOCOL"] == kafka["securityProtocol"]

    def test_the_config_the_chart_mounts_loads_with_the_secrets_it_gets(self, variant, monkeypatch):
        name, docs = variant
        env = pod_env(docs, deployments(docs)["runner"])
        for ref in re.findall(r"\$\{env:([A-Za-z0-9_]+)\}", config_text(docs)):
            monkeypatch.delenv(ref, raising=False)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        config = parse_config(config_text(docs), "hookrun.yaml")
        written = yaml.safe_load(values_of(name)["config"])
        assert len(config.triggers) == len(written.get("triggers") or [])


class TestTopicsJob:
    def test_the_job_runs_the_topics_command_of_the_cli(self, variant):
        name, docs = variant
        (job,) = of_kind(docs, "Job")
        command = container(job)["command"]
        assert command == values_of(name)["kafka"]["topicsJob"]["command"]
        pyproject = tomllib.loads((ROOT / "libs/cli/pyproject.toml").read_text())
        assert command[0] in pyproject["project"]["scripts"]
        assert command[1:] == ["topics", "create"]
        hooks = job["metadata"]["annotations"]["helm.sh/hook"].split(",")
        assert hooks == ["post-install", "pre-upgrade"]

    def test_the_job_lays_topics_out_as_the_services_would(self, variant):
        name, docs = variant
        (job,) = of_kind(docs, "Job")
        topics = values_of(name)["kafka"]["topics"]
        job_env = {v["name"]: v.get("value") for v in container(job)["env"]}
        assert job_env["HOOKRUN_TOPIC_REPLICATION_FACTOR"] == str(topics["replicationFactor"])
        assert job_env["HOOKRUN_TOPIC_PARTITIONS"] == str(topics["partitions"])
        for workload in deployments(docs).values():
            env = {v["name"]: v.get("value") for v in container(workload)["env"]}
            assert {k: env[k] for k in job_env} == job_env


class TestBadValues:
    @pytest.mark.parametrize(
        ("args", "message"),
        [
            (["--set", "kafka.securityProtocol=TLS"], "securityProtocol"),
            (["--set", "kafka.securityProtocol=SASL_SSL"], "kafka.sasl.username: required"),
            (
                ["--set", "kafka.securityProtocol=SASL_SSL", "--set", "kafka.sasl.username=u"],
                "secrets.kafkaSaslPassword: required",
            ),
            (
                ["--set", "kafka.tls.ca=true"],
                "kafka.tls: set with kafka.securityProtocol=PLAINTEXT",
            ),
            (["--set", "status.database=postgresql"], "secrets.databaseUrl: required"),
            (
                ["--set", "status.database=postgresql", "--set", "secrets.databaseUrl=mysql://x"],
                "secrets.databaseUrl: must start with postgresql://",
            ),
            (["--set", "secrets.env.bad-name=x"], "bad-name"),
            (
                ["--set", "gateway.env.HOOKRUN_PORT=9000"],
                "gateway.env.HOOKRUN_PORT: the chart sets",
            ),
            (["--set", "secrets.env.LOG_LEVEL=x"], "secrets.env.LOG_LEVEL: the chart sets"),
            (
                ["--set", "runner.env.HOOKRUN_RUNNER_HEALTH_PORT=9200"],
                "runner.env.HOOKRUN_RUNNER_HEALTH_PORT: it would move /metrics",
            ),
            (["--set", "otel.LOG_LEVEL=x"], "LOG_LEVEL"),
            (
                ["--set", "status.service.type=LoadBalancer"],
                'status.forwardedAllowIps: "*" would let anyone',
            ),
        ],
    )
    def test_values_that_cannot_work_fail_the_render_naming_the_field(self, helm, args, message):
        result = run_helm(helm, "template", "hookrun", str(CHART), *args)
        assert result.returncode != 0
        assert message in result.stderr


#: A config whose one trigger runs a step that writes a temporary file and its output.
RUN_CONFIG = """
project: {id: p-ro, slug: ro, name: Read-only}
organization: {id: o-ro, slug: ro, title: Read-only}
environment: {id: e-ro, slug: ro, type: PRODUCTION}
steps:
  - name: Write
    command: ["python3", "-c", "import json, os, tempfile; tempfile.TemporaryFile().close(); json.dump({'ok': True}, open(os.environ['HOOKRUN_OUTPUT'], 'w'))"]
    timeout_s: 60
triggers:
  - id: ro
    title: Read-only root
    conditions:
      - {type: static_secret, header: X-Token, secret: "${env:HOOKRUN_RO_TOKEN}"}
    actions:
      - {action: run_execution, step: Write}
    response:
      json: {run_id: "{run_id}"}
"""
#: The image's user (Dockerfile) and the chart's runAsUser.
POD_UID = 10001


def read_only_root(writable: dict[str, Path], read_only: dict[str, Path]) -> list[str]:
    """bwrap options for this machine's root made read-only, as a pod's readOnlyRootFilesystem,
    with only its volumes mounted: ``writable`` and ``read_only`` map a path in the pod to the
    host folder that stands for the volume."""
    targets = [*writable, *read_only]
    args = ["--tmpfs", "/"]

    def mirror(folder: Path) -> None:
        # Bind each entry of the root as it is, but build the folders a volume lies in on the
        # tmpfs (a mount point cannot be made inside a read-only bind).
        for entry in sorted(folder.iterdir()):
            path = str(entry)
            if path in ("/proc", "/dev", "/sys") or path in targets:
                continue
            if entry.is_symlink():
                args.extend(["--symlink", os.readlink(entry), path])
            elif entry.is_dir() and any(t.startswith(path + "/") for t in targets):
                args.extend(["--dir", path])
                mirror(entry)
            elif entry.is_dir() or entry.is_file():
                args.extend(["--ro-bind", path, path])

    mirror(Path("/"))
    args += ["--dev", "/dev", "--unshare-pid", "--proc", "/proc", "--die-with-parent"]
    for path, host in writable.items():
        args.extend(["--bind", str(host), path])
    for path, host in read_only.items():
        args.extend(["--ro-bind", str(host), path])
    # The image's code stands in for by this checkout, which a volume may hide: a clone
    # under /tmp (as CI makes one) lies under the pod's /tmp emptyDir.
    if any(str(ROOT).startswith(target.rstrip("/") + "/") for target in targets):
        args.extend(["--ro-bind", str(ROOT), str(ROOT)])
    return [*args, "--remount-ro", "/"]


@pytest.fixture
def bwrap() -> str:
    found = shutil.which("bwrap")
    if found is None:
        missing_part("bwrap is not on PATH: `make setup` installs Debian's bubblewrap")
    return found


class TestPods:
    def test_the_job_and_the_services_run_a_launch_on_a_read_only_root_with_the_charts_volumes(
        self, helm, bwrap, kafka_bootstrap, tmp_path
    ):
        self.launch(helm, bwrap, kafka_bootstrap, tmp_path, VALUES["default"])

    def test_the_secured_example_runs_a_launch_on_a_sasl_ssl_broker_with_the_secrets_mounted(
        self, helm, bwrap, secure_kafka, tmp_path
    ):
        # The secured example against the SCRAM-SHA-512-over-TLS broker, its password and CA
        # in the chart's Secret, mounted as the pods would; status on SQLite here.
        self.launch(
            helm,
            bwrap,
            secure_kafka.bootstrap,
            tmp_path,
            [
                *VALUES["secured"],
                *("--set", f"kafka.sasl.username={USERNAME}"),
                *("--set", f"secrets.kafkaSaslPassword={secure_kafka.password}"),
                *("--set-file", f"secrets.kafkaCa={secure_kafka.cafile}"),
                *("--set", "status.database=sqlite", "--set", "secrets.databaseUrl="),
            ],
        )

    def launch(
        self, helm: Path, bwrap: str, bootstrap: str, tmp_path: Path, values: list[str]
    ) -> None:
        """Run the topics Job's command, then the four services, as the chart's pods with
        ``values`` would, and drive one launch through them to completed."""
        (tmp_path / "hookrun.yaml").write_text(RUN_CONFIG)
        token = "ro-token-5b1e"
        args = [
            *values,
            *("--set-file", f"config={tmp_path / 'hookrun.yaml'}"),
            *("--set", f"secrets.env.HOOKRUN_RO_TOKEN={token}"),
        ]
        docs = render(helm, *args)
        namespace = new_namespace("helm")
        base = {"KAFKA_BOOTSTRAP_SERVERS": bootstrap, "HOOKRUN_NAMESPACE": namespace}

        # The topics Job first, as `helm install` runs it (it is a hook): its command creates
        # the topics and finds them safe.
        (job,) = of_kind(docs, "Job")
        made = subprocess.run(
            [*self.pod(bwrap, docs, job, base, tmp_path / "topics"), *container(job)["command"]],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert made.returncode == 0, made.stdout + made.stderr
        assert f"created {namespace}.runs" in made.stdout
        assert "is there and safe" in made.stdout

        ports = {service: free_port() for service in SERVICES}
        started: list[ServiceProcess] = []
        try:
            for service in ("status", "runner", "notifier", "gateway"):
                workload = deployments(docs)[service]
                port_setting, host_setting = (name.upper() for name in LISTENS[service])
                # Pods have a network namespace each: here they share 127.0.0.1.
                env = {**base, port_setting: str(ports[service]), host_setting: "127.0.0.1"}
                if service == "gateway":
                    env["HOOKRUN_STATUS_URL"] = f"http://127.0.0.1:{ports['status']}"
                wrapper = self.pod(bwrap, docs, workload, env, tmp_path / service)
                proc = ServiceProcess(
                    service,
                    f"hookrun.{service}",
                    {},
                    tmp_path / "logs",
                    health_url=f"http://127.0.0.1:{ports[service]}/readyz",
                    wrapper=wrapper,
                )
                started.append(proc.start(wait_s=0))
            for proc in started:
                proc.wait_healthy(90, ready_key=None)

            gateway = f"http://127.0.0.1:{ports['gateway']}/api/v0/launch/ro"
            launched = httpx.post(f"{gateway}/", json={}, headers={"X-Token": token}, timeout=10)
            assert launched.status_code == 202, launched.text
            run_id = launched.json()["run_id"]
            deadline = time.monotonic() + 60
            info: dict[str, Any] = {}
            while time.monotonic() < deadline:
                info = httpx.get(
                    f"{gateway}/run/", params={"run_id": run_id}, headers={"X-Token": token}
                ).json()
                if info["status"] != "pending":
                    break
                time.sleep(0.2)
            logs = "\n".join(p.tail() for p in started)
            assert info["status"] == "completed", logs
            # Nothing was written to the read-only root: no service logged a refused write.
            assert "Read-only file system" not in logs
        finally:
            for proc in started:
                proc.stop()

    def pod(
        self,
        bwrap: str,
        docs: list[dict[str, Any]],
        workload: dict[str, Any],
        overrides: dict[str, str],
        host: Path,
    ) -> list[str]:
        """The argv prefix that runs a command as the workload's pod would: uid 10001, a
        read-only root with the pod's volumes, the pod's environment alone (with
        ``overrides``)."""
        env = pod_env(docs, workload) | overrides
        env |= {
            "PATH": f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin",
            "HOME": "/home/hookrun",
        }
        writable, read_only = self.volumes(docs, workload, host)
        return [
            bwrap,
            *read_only_root(writable, read_only),
            *("--unshare-user", "--uid", str(POD_UID), "--gid", str(POD_UID)),
            "--clearenv",
            *[arg for name, value in env.items() for arg in ("--setenv", name, value)],
            "--",
        ]

    @staticmethod
    def volumes(
        docs: list[dict[str, Any]], workload: dict[str, Any], host: Path
    ) -> tuple[dict[str, Path], dict[str, Path]]:
        """Host folders standing for the pod's volumes: emptyDirs (writable), the config and
        the Secret's items (read-only)."""
        (config,) = of_kind(docs, "ConfigMap")
        secrets = secret_data(docs)
        volumes = {v["name"]: v for v in workload["spec"]["template"]["spec"]["volumes"]}
        writable, read_only = {}, {}
        for mount in container(workload)["volumeMounts"]:
            folder = host / mount["name"]
            folder.mkdir(parents=True)
            volume = volumes[mount["name"]]
            if "configMap" in volume:
                for key, text in config["data"].items():
                    (folder / key).write_text(text)
                read_only[mount["mountPath"]] = folder
            elif "secret" in volume:
                for item in volume["secret"]["items"]:
                    (folder / item["path"]).write_text(secrets[item["key"]])
                read_only[mount["mountPath"]] = folder
            else:
                assert "emptyDir" in volume, mount["name"]
                writable[mount["mountPath"]] = folder
        return writable, read_only
