# hookrun developer entry points (GNU make). From a fresh clone only python3, Java 17 and Maven
# are needed: `make setup` installs uv, the workspace and the Kafka broker jars.

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

UV := .tools/bin/uv
PY := .venv/bin/python
UV_VERSION := 0.13.8
PYTEST_ARGS ?=
# The sync sentinel is rebuilt whenever the lock or any workspace member's metadata changes.
SYNCED := .venv/.hookrun-synced
PYPROJECTS := pyproject.toml $(wildcard libs/*/pyproject.toml services/*/pyproject.toml)

.PHONY: help setup kafka-fetch setup-postgres setup-browser setup-sandbox setup-helm run test test-quick bench chaos docs lint fmt kafka-start kafka-stop kafka-status

help:
	@echo "make setup        install uv, the workspace (.venv), the Kafka broker jars and bubblewrap"
	@echo "make run          broker + every service + demo receiver with examples/hookrun.yaml; Ctrl-C stops all"
	@echo "make chaos        5,000 signed launches while every service and the broker are killed and restarted"
	@echo "make chaos BROKERS=3   the same on a three-broker cluster, its run-topic leader killed -9"
	@echo "make bench        the benchmark: every figure beside its same-run baseline (bench/results/)"
	@echo "make docs         regenerate event schemas, docs/asyncapi.yaml and docs/events.md"
	@echo "make test         every test, against a real broker (KAFKA_BOOTSTRAP_SERVERS or one started)"
	@echo "make test-quick   tests that need neither Kafka nor the whole system"
	@echo "make lint | fmt   ruff, ruff format, mypy (--strict on libs/events) | autoformat"
	@echo "make kafka-start | kafka-stop | kafka-status   the local dev broker on 127.0.0.1:9092"
	@echo "PYTEST_ARGS='-k name -x' passes options to pytest"

$(UV):
	python3 -m venv .tools
	.tools/bin/pip install -q uv==$(UV_VERSION)

$(SYNCED): $(UV) uv.lock $(PYPROJECTS)
	UV_PYTHON_DOWNLOADS=never $(UV) sync --frozen --python python3
	touch $@

setup: $(SYNCED) setup-sandbox kafka-fetch

# The broker's jars, with Maven, once (cached under ~/.cache/hookrun).
kafka-fetch: $(SYNCED)
	$(PY) -m hookrun.dev.kafka fetch

# The runner runs executions in a bubblewrap sandbox when `bwrap` is there (docs/runner.md,
# Executions): Debian's package is installed when missing (as root with apt-get; CI runs as root).
setup-sandbox:
	@if command -v bwrap >/dev/null; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing Debian's bubblewrap for the execution sandbox"; \
	  DEBIAN_FRONTEND=noninteractive apt-get update -qq; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap >/dev/null; \
	else \
	  echo "bwrap not found: executions run without a sandbox (apt-get install bubblewrap)"; \
	fi

# The status tests run on PostgreSQL too: Debian's server binaries are installed when missing
# (as root with apt-get; CI runs as root). No cluster is created or started by the package:
# the tests initdb their own throwaway cluster and stop it by pid.
setup-postgres:
	@if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing Debian's postgresql for the status tests"; \
	  mkdir -p /etc/postgresql-common; \
	  echo "create_main_cluster = false" > /etc/postgresql-common/createcluster.conf; \
	  DEBIAN_FRONTEND=noninteractive apt-get update -qq; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; \
	else \
	  echo "PostgreSQL not found: its status tests skip here and fail under CI=true (apt-get install postgresql)"; \
	fi

# The dashboard's browser tests drive Debian's headless Chromium through chromedriver (Selenium):
# both packages are installed when missing (as root with apt-get; CI runs as root).
setup-browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing Debian's chromium and chromium-driver for the dashboard's browser tests"; \
	  DEBIAN_FRONTEND=noninteractive apt-get update -qq; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
	else \
	  echo "Chromium not found: the browser tests skip here and fail under CI=true (apt-get install chromium chromium-driver)"; \
	fi

# The Helm chart's tests (tests/dev/test_helm.py) render and lint it with a real helm, built
# once with Go from the module proxy into ~/.cache/hookrun (HOOKRUN_CACHE_DIR), which every
# clone reuses. Without Go the tests say so (and fail under CI=true).
setup-helm: $(SYNCED)
	@$(PY) -m hookrun.dev.helm install >/dev/null || \
	  echo "helm could not be built: the chart's tests fail under CI=true (see above)"

# pytest's session fixture uses KAFKA_BOOTSTRAP_SERVERS, else a broker container if Docker
# answers, else the broker on 127.0.0.1:9092, else starts one for the run and stops it at the end.
# The unit tests run alongside the others (hookrun.dev.suite; HOOKRUN_TEST_SERIAL=1: one run).
test: setup setup-postgres setup-browser setup-helm
	$(PY) -m hookrun.dev.suite $(PYTEST_ARGS)

test-quick: $(SYNCED)
	$(PY) -m hookrun.dev.suite --unit $(PYTEST_ARGS)

MYPY_PATH := libs/events:libs/config:libs/dev:libs/cli:services/gateway:services/runner:services/status:services/notifier
MYPY_PACKAGES := hookrun.config hookrun.dev hookrun.cli hookrun.gateway hookrun.runner hookrun.status hookrun.notifier

# Runs every check even when an earlier one fails, and fails if any did: mypy errors are shown
# and counted, never swallowed.
lint: $(SYNCED)
	@status=0; \
	echo "+ ruff check"; .venv/bin/ruff check . || status=1; \
	echo "+ ruff format --check"; .venv/bin/ruff format --check . || status=1; \
	echo "+ mypy --strict hookrun.events"; \
	MYPYPATH=libs/events .venv/bin/mypy --strict -p hookrun.events || status=1; \
	echo "+ mypy (the other packages)"; \
	MYPYPATH=$(MYPY_PATH) .venv/bin/mypy $(foreach p,$(MYPY_PACKAGES),-p $(p)) || status=1; \
	exit $$status

fmt: $(SYNCED)
	.venv/bin/ruff check --fix .
	.venv/bin/ruff format .

kafka-start: setup
	$(PY) -m hookrun.dev.kafka start

kafka-stop: $(SYNCED)
	$(PY) -m hookrun.dev.kafka stop

kafka-status: $(SYNCED)
	$(PY) -m hookrun.dev.kafka status

# The whole system as a newcomer meets it. HOOKRUN_CONFIG / KAFKA_BOOTSTRAP_SERVERS override.
# It needs neither Java nor Maven when KAFKA_BOOTSTRAP_SERVERS names a broker.
run: $(SYNCED) setup-sandbox $(if $(KAFKA_BOOTSTRAP_SERVERS),,kafka-fetch)
	$(PY) -m hookrun.dev.run

bench: setup
	$(PY) bench/run.py $(BENCH_ARGS)

# Its own broker and system on free ports; CHAOS_ARGS='--launches 5000 --rate 50 --scale 2';
# BROKERS=3: a three-broker cluster whose run-topic leader is killed -9.
chaos: setup
	$(PY) bench/chaos.py $(if $(BROKERS),--brokers $(BROKERS)) $(CHAOS_ARGS)

docs: $(SYNCED)
	$(PY) -m hookrun.dev.eventdocs
