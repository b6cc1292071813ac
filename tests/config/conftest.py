"""Fixtures for hookrun.config tests: a minimal valid config as data, and a YAML renderer."""

import copy
from collections.abc import Callable
from typing import Any

import pytest
import yaml

from hookrun.config import HookrunConfig, parse_config

GH_SECRET = "gh-secret-value-7f3a"
TOKEN = "static-token-value-91c2"
WHSEC = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

BASE: dict[str, Any] = {
    "project": {"id": "p-1", "slug": "demo", "name": "Demo"},
    "organization": {"id": "o-1", "slug": "acme", "title": "Acme"},
    "environment": {"id": "e-1", "slug": "dev", "type": "DEVELOPMENT"},
    "steps": [
        {
            "name": "Extract",
            "command": ["python3", "extract.py", "--batch-size", "{parameters.batch_size}"],
            "parameters": [{"name": "batch_size", "type": "integer", "default": 32}],
            "inputs": [{"name": "payload"}],
            "env": {"API_TOKEN": "${env:EXTRACT_TOKEN}"},
        },
        {"name": "Train", "command": ["python3", "train.py"], "inputs": [{"name": "features"}]},
    ],
    "pipelines": [
        {
            "name": "Nightly",
            "nodes": [{"name": "extract", "step": "Extract"}, {"name": "train", "step": "Train"}],
            "edges": [{"from": "extract", "to": "train"}],
        }
    ],
    "triggers": [
        {
            "id": "feature-extraction",
            "title": "Feature extraction",
            "conditions": [
                {
                    "type": "hmac",
                    "header": "X-Hub-Signature-256",
                    "secret": GH_SECRET,
                    "prefix": "sha256=",
                },
                {"type": "static_secret", "header": "X-Token", "secret": TOKEN},
            ],
            "actions": [
                {
                    "action": "run_execution",
                    "step": "Extract",
                    "parameters": {"batch_size": "{payload.batch_size}"},
                    "payload_input": "payload",
                }
            ],
            "notifications": [{"url": "https://hooks.example.com/runs", "secret": WHSEC}],
        }
    ],
}


@pytest.fixture
def data() -> dict[str, Any]:
    """A fresh deep copy of a minimal valid config, to break in one place per test."""
    return copy.deepcopy(BASE)


@pytest.fixture
def parse() -> Callable[[dict[str, Any]], HookrunConfig]:
    """Render config data as YAML and load it as `hookrun.yaml`."""

    def _parse(config: dict[str, Any]) -> HookrunConfig:
        return parse_config(yaml.safe_dump(config, sort_keys=False), "hookrun.yaml")

    return _parse
