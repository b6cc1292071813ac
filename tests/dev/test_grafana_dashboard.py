"""deploy/grafana/hookrun.json queries only metrics the services define."""

from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client import REGISTRY

import hookrun.events.metrics
import hookrun.gateway.metrics
import hookrun.notifier.metrics
import hookrun.runner.metrics
import hookrun.status.metrics  # noqa: F401  # each registers its metrics

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy/grafana/hookrun.json"


def test_every_metric_a_panel_queries_exists():
    doc = json.loads(DASHBOARD.read_text())
    queried = {
        name
        for panel in doc["panels"]
        for target in panel["targets"]
        for name in re.findall(r"hookrun_[a-z_]+", target["expr"])
    }
    # A family is named without its samples' suffixes (a labelled one may have no sample yet).
    queried = {re.sub(r"_(total|bucket|count|sum)$", "", name) for name in queried}
    exposed = {family.name for family in REGISTRY.collect()}
    assert queried, "no hookrun_* metric queried"
    assert queried <= exposed, sorted(queried - exposed)
