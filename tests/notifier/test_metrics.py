"""The notifier's metrics port and what its metrics count."""

from __future__ import annotations

import pytest

from hookrun.notifier.config import Settings
from hookrun.notifier.metrics import status_class


@pytest.mark.parametrize(
    ("env", "port"),
    [
        ({"HOOKRUN_METRICS_PORT": "9101"}, 9101),
        ({"HOOKRUN_NOTIFIER_HEALTH_PORT": "9103"}, 9103),
        ({"HOOKRUN_METRICS_PORT": "9101", "HOOKRUN_NOTIFIER_HEALTH_PORT": "9103"}, 9103),
    ],
)
def test_the_metrics_port_and_its_older_name(monkeypatch, env, port):
    for name in ("HOOKRUN_METRICS_PORT", "HOOKRUN_NOTIFIER_HEALTH_PORT"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert Settings().hookrun_metrics_port == port


@pytest.mark.parametrize(
    ("code", "label"),
    [(200, "2xx"), (204, "2xx"), (301, "3xx"), (410, "4xx"), (503, "5xx"), (None, "none")],
)
def test_status_classes(code, label):
    assert status_class(code) == label
