"""The launch rules record the request in TriggerLaunched as sent, secrets redacted.

That the record's bytes are what encode(TriggerLaunched(...)) writes is tests/events/test_launches.py.
"""

import asyncio
import base64

from hookrun.config import InboundRequest, parse_config
from hookrun.events import LaunchRequest, TriggerLaunched
from hookrun.gateway.adapters import FakeDeliveryIndex, FakeEventLog
from hookrun.gateway.handlers import Deps, launch

from .test_launch import CONFIG


def test_the_launch_rules_record_the_request_with_its_secrets_redacted():
    config = parse_config(CONFIG, "t.yaml")
    log = FakeEventLog()
    log.source = "hookrun/gw/x"
    deps = Deps(config=config, log=log, deliveries=FakeDeliveryIndex())
    request = InboundRequest(
        method="POST",
        path="/api/v0/launch/token/",
        headers={"X-Token": "tok", "Authorization": "Bearer b", "Content-Type": "text/plain"},
        query={"a": "é"},
        body=b"\x00\xffbody",
        remote_addr="10.0.0.1",
    )
    reply = asyncio.run(launch("token", request, deps))
    assert reply.status == 202
    [event] = log.events
    assert isinstance(event, TriggerLaunched)
    assert event.source == "hookrun/gw/x"
    assert event.config_version == config.config_version
    assert event.request == LaunchRequest(
        method="POST",
        path="/api/v0/launch/token/",
        query={"a": "é"},
        headers={
            "x-token": "[redacted]",
            "authorization": "[redacted]",
            "content-type": "text/plain",
        },
        content_type="text/plain",
        remote_addr="10.0.0.1",
        body_b64=base64.b64encode(b"\x00\xffbody").decode(),
    )
    assert event.request.headers["x-token"] == "[redacted]"
    assert event.request.content_type == "text/plain"
