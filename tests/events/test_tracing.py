"""The run's trace context: W3C parsing edge cases, the CloudEvents extension headers, the
OTEL_* settings, and the trace id of JSON log lines."""

from __future__ import annotations

import contextvars
import io
import json
import logging

import pytest

from hookrun.events import codec, logs, tracing
from hookrun.events.runs import RunCancelRequested
from hookrun.events.tracing import TraceContext, parse

TRACE = "0af7651916cd43dd8448eb211c80319c"
SPAN = "b7ad6b7169203331"
VALID = f"00-{TRACE}-{SPAN}-01"


class TestParse:
    def test_a_valid_traceparent_is_kept_as_it_came(self) -> None:
        ctx = parse(VALID)
        assert ctx == TraceContext(VALID)
        assert (ctx.trace_id, ctx.span_id, ctx.sampled) == (TRACE, SPAN, True)

    @pytest.mark.parametrize(
        "value",
        [
            "",
            "garbage",
            VALID.upper(),  # W3C: lowercase hex only
            f"00-{'0' * 32}-{SPAN}-01",  # all-zero trace id
            f"00-{TRACE}-{'0' * 16}-01",  # all-zero parent id
            f"ff-{TRACE}-{SPAN}-01",  # version ff is invalid
            f"00-{TRACE}-{SPAN}-01-extra",  # version 00 has exactly four fields
            f"00-{TRACE[:-1]}-{SPAN}-01",
            f"00-{TRACE}-{SPAN}-1",
            f"00_{TRACE}_{SPAN}_01",
        ],
    )
    def test_a_malformed_traceparent_is_no_trace_context(self, value: str) -> None:
        assert parse(value) is None
        assert parse(value, "vendor=x") is None  # tracestate never goes without a traceparent

    def test_a_later_version_with_more_fields_is_read_as_version_00(self) -> None:
        ctx = parse(f"cc-{TRACE}-{SPAN}-01-what-comes-later")
        assert ctx is not None and ctx.traceparent == VALID

    def test_tracestate_is_carried_with_its_traceparent(self) -> None:
        ctx = parse(VALID, " rojo=00f067aa0ba902b7,congo=t61rcWkgMzE ")
        assert ctx is not None and ctx.tracestate == "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"
        assert ctx.http_headers() == {"traceparent": VALID, "tracestate": ctx.tracestate}

    @pytest.mark.parametrize(
        "state", ["a=1\r\nX-Injected: 1", "x" * 513, ",".join(f"k{n}=v" for n in range(33)), ""]
    )
    def test_an_unusable_tracestate_is_dropped_and_the_trace_kept(self, state: str) -> None:
        assert parse(VALID, state) == TraceContext(VALID)


def for_launch(headers: dict[str, str]) -> TraceContext:
    """``tracing.for_launch`` in a context of its own, as each request of the gateway is."""
    return contextvars.copy_context().run(tracing.for_launch, headers)


class TestForLaunch:
    def test_the_senders_valid_traceparent_and_tracestate_are_continued(self) -> None:
        ctx = for_launch({"traceparent": VALID, "tracestate": "a=1"})
        assert ctx == TraceContext(VALID, "a=1")

    @pytest.mark.parametrize("headers", [{}, {"traceparent": "00-zz"}, {"tracestate": "a=1"}])
    def test_without_a_valid_one_a_new_unsampled_trace_starts(self, headers: dict) -> None:
        ctx = for_launch(headers)
        assert parse(ctx.traceparent) == TraceContext(ctx.traceparent)
        assert not ctx.sampled and ctx.tracestate is None
        assert for_launch(headers).trace_id != ctx.trace_id

    def test_the_request_is_marked_as_working_on_the_runs_trace(self) -> None:
        def launch() -> str | None:
            tracing.for_launch({"traceparent": VALID})
            return tracing.current_trace_id()

        assert contextvars.copy_context().run(launch) == TRACE


class TestCloudEventsExtension:
    def _event(self, **trace: str | None) -> RunCancelRequested:
        return RunCancelRequested(run_id="r-1", requested_by="admin", **trace)

    def test_an_events_trace_context_travels_in_ce_headers_and_back(self) -> None:
        record = codec.encode(self._event(traceparent=VALID, tracestate="a=1"))
        headers = dict(record.headers)
        assert headers["ce_traceparent"] == VALID.encode()
        assert headers["ce_tracestate"] == b"a=1"
        assert b"trace" not in record.value  # the envelope is not part of the data
        decoded = codec.decode(record.value, record.headers)
        assert decoded.trace == TraceContext(VALID, "a=1")

    def test_the_runs_trace_is_stamped_on_an_event_that_has_none(self) -> None:
        record = codec.encode(self._event(), trace=TraceContext(VALID))
        assert dict(record.headers)["ce_traceparent"] == VALID.encode()
        assert "ce_tracestate" not in dict(record.headers)

    def test_an_event_without_trace_has_no_trace_headers(self) -> None:
        record = codec.encode(self._event())
        assert not [n for n, _ in record.headers if "trace" in n]
        assert codec.decode(record.value, record.headers).trace is None

    def test_a_malformed_ce_traceparent_loses_the_trace_not_the_event(self) -> None:
        record = codec.encode(self._event())
        headers = [*record.headers, ("ce_traceparent", b"nonsense"), ("ce_tracestate", b"a=1")]
        event = codec.decode(record.value, headers)
        assert isinstance(event, RunCancelRequested) and event.trace is None


class TestConfigure:
    def test_without_an_endpoint_no_spans_are_made(self) -> None:
        assert tracing.configure("test", {}) is False
        assert not tracing.enabled()
        with tracing.span("nothing") as span:
            assert span is None

    @pytest.mark.parametrize(
        "env",
        [
            {"OTEL_SDK_DISABLED": "true"},
            {"OTEL_TRACES_EXPORTER": "none"},
        ],
    )
    def test_an_endpoint_can_still_be_switched_off(self, env: dict[str, str]) -> None:
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = "http://127.0.0.1:4318"
        assert tracing.configure("test", env) is False

    @pytest.mark.parametrize(
        ("env", "named"),
        [
            ({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, "OTEL_EXPORTER_OTLP_PROTOCOL='grpc'"),
            ({"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc"}, "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"),
            ({"OTEL_TRACES_EXPORTER": "zipkin"}, "OTEL_TRACES_EXPORTER='zipkin'"),
            ({"OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4318"}, "OTEL_EXPORTER_OTLP_ENDPOINT"),
        ],
    )
    def test_a_setting_hookrun_cannot_honour_is_refused_by_name(
        self, env: dict[str, str], named: str
    ) -> None:
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", **env}
        with pytest.raises(ValueError, match=named):
            tracing.configure("test", env)
        assert not tracing.enabled()


def test_json_log_lines_carry_the_trace_id_of_the_work_under_way() -> None:
    out = io.StringIO()
    logs.configure("test", "INFO", "json", stream=out)
    try:
        log = logging.getLogger("test.tracing")
        with tracing.working_on(TraceContext(VALID)):
            log.info("inside")
        log.info("outside")
        log.info("explicit", extra={"trace_id": "f" * 32})
    finally:
        logging.getLogger().handlers.clear()
    inside, outside, explicit = (json.loads(line) for line in out.getvalue().splitlines())
    assert inside["trace_id"] == TRACE
    assert "trace_id" not in outside
    assert explicit["trace_id"] == "f" * 32
