"""The CLI's argument parsing and output formatting, without a system."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner, Result
from rich.console import Console

from hookrun.cli import output
from hookrun.cli.api import SseEvent, sse_events
from hookrun.cli.inputs import UsageError, parse_header, parse_since, read_data
from hookrun.cli.main import _example_payload, _run_id_in, cli
from hookrun.config import parse_config

NOW = datetime(2026, 12, 6, 4, 0, 0, tzinfo=UTC)


class TestReadData:
    def test_inline_json_is_sent_as_written(self) -> None:
        assert read_data('{"n": 1}') == b'{"n": 1}'

    def test_a_file_is_read_as_bytes_whatever_it_holds(self, tmp_path: Path) -> None:
        (tmp_path / "body.bin").write_bytes(b"\x00not json")
        assert read_data(f"@{tmp_path / 'body.bin'}") == b"\x00not json"

    def test_inline_text_that_is_not_json_is_refused(self) -> None:
        with pytest.raises(UsageError, match=r"^--data: not JSON .*use @FILE"):
            read_data("{n: 1}")

    def test_a_missing_file_is_named(self, tmp_path: Path) -> None:
        with pytest.raises(UsageError, match=r"cannot read .*nope\.json: No such file"):
            read_data(f"@{tmp_path / 'nope.json'}")


class TestParseHeader:
    @pytest.mark.parametrize(
        ("raw", "parsed"),
        [
            ("X-Env: prod", ("X-Env", "prod")),
            ("a:b:c", ("a", "b:c")),
            ("X-Empty:", ("X-Empty", "")),
        ],
    )
    def test_name_and_value(self, raw: str, parsed: tuple[str, str]) -> None:
        assert parse_header(raw) == parsed

    @pytest.mark.parametrize("raw", ["no colon", ": value", "Bad Name: x"])
    def test_what_is_not_a_header_is_refused(self, raw: str) -> None:
        with pytest.raises(UsageError, match="expected 'Name: value'"):
            parse_header(raw)


class TestParseSince:
    @pytest.mark.parametrize(
        ("raw", "expected"),
        [
            ("15m", "2026-12-06T03:45:00Z"),
            ("2h", "2026-12-06T02:00:00Z"),
            ("1d", "2026-12-05T04:00:00Z"),
            ("30s", "2026-12-06T03:59:30Z"),
            ("2026-12-01T10:00:00Z", "2026-12-01T10:00:00Z"),
            ("2026-12-01T12:00:00+02:00", "2026-12-01T10:00:00Z"),
            ("2026-12-01", "2026-12-01T00:00:00Z"),
        ],
    )
    def test_durations_and_times_become_utc(self, raw: str, expected: str) -> None:
        assert parse_since(raw, NOW) == expected

    def test_anything_else_is_refused_with_examples(self) -> None:
        with pytest.raises(UsageError, match="expected a duration such as 15m"):
            parse_since("yesterday", NOW)


def test_server_sent_events_are_split_and_comments_skipped() -> None:
    lines = ["retry: 2000", "", "id: a1", "event: run", 'data: {"x":', "data: 1}", "", ": ka", ""]
    assert list(sse_events(iter(lines))) == [SseEvent("run", '{"x":\n1}', "a1")]


class TestAnswers:
    def test_the_run_id_of_a_json_or_text_answer(self) -> None:
        run_id = "5c1d6e2a-0000-4000-8000-000000000001"
        assert _run_id_in({"run_id": run_id}, "") == run_id
        assert _run_id_in("Created run " + run_id, "Created run " + run_id) == run_id
        assert _run_id_in({"ok": True}, '{"ok": true}') is None

    def test_the_example_payload_is_the_schemas_first_example(self) -> None:
        config = parse_config(Path("examples/hookrun.yaml").read_text(), "examples/hookrun.yaml")
        [trigger] = [t for t in config.triggers if t.id == "feature-extraction"]
        validator = trigger.payload_validator
        assert validator is not None
        example = orjson.loads(_example_payload(trigger))
        # the example passes the trigger's own payload_schema: `hookrun send` starts a real run
        assert example["batch_size"] >= 1
        assert not list(validator.iter_errors(example))


class TestFormatting:
    def test_durations(self) -> None:
        assert [output.duration(v) for v in (None, 83, 1400, 125_000)] == [
            "-",
            "83 ms",
            "1.4 s",
            "2 min 5 s",
        ]

    def test_a_run_table_keeps_ids_whole_on_a_narrow_terminal(self) -> None:
        run = {
            "run_id": "5c1d6e2a-0000-4000-8000-000000000001",
            "trigger_id": "feature-extraction",
            "status": None,
            "info_status": "pending",
            "received_at": "2026-12-06T04:00:00.123456Z",
            "duration_ms": None,
        }
        console = Console(width=80, record=True)
        console.print(output.runs_table([run]))
        text = console.export_text()
        assert run["run_id"] in text and "pending" in text

    def test_a_launch_body_is_shown_decoded(self) -> None:
        event = {"type": "x", "data": {"request": {"body_b64": "eyJuIjogMX0="}}}
        shown = output.readable_event(event)
        assert shown["data"]["request"]["body (decoded)"] == '{"n": 1}'
        assert "body (decoded)" not in event["data"]["request"]


def test_every_command_of_the_design_exists_and_takes_json() -> None:
    runner = CliRunner()
    commands = [
        ["send"],
        ["runs", "list"],
        ["runs", "show"],
        ["runs", "watch"],
        ["runs", "cancel"],
        ["runs", "replay"],
        ["runs", "redeliver"],
        ["triggers", "log"],
        ["events"],
        ["config", "check"],
        ["rebuild"],
        ["topics"],
    ]
    for command in commands:
        result = runner.invoke(cli, [*command, "--help"])
        assert result.exit_code == 0, (command, result.output)
        assert "--json" in result.output, command


class TestSendNeedsAPrivateKey:
    """A condition whose config holds only a public key (Standard Webhooks v1a, whpk_)."""

    @pytest.fixture
    def setup(self, tmp_path: Path) -> tuple[Path, Path]:
        import base64

        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        key = Ed25519PrivateKey.generate()
        public = base64.b64encode(key.public_key().public_bytes_raw()).decode()
        seed = base64.b64encode(key.private_bytes_raw()).decode()
        config = Path("examples/hookrun.yaml").read_text()
        config = config.replace(
            "  - id: nightly-pipeline\n",
            "  - id: asym\n    title: asym\n    conditions: [{type: standard_webhooks, public_key: whpk_"
            + public
            + "}]\n    actions: [{action: run_pipeline, pipeline: Nightly}]\n"
            "  - id: nightly-pipeline\n",
        )
        path = tmp_path / "hookrun.yaml"
        path.write_text(config)
        (tmp_path / "key").write_text(f"whsk_{seed}\n")
        return path, tmp_path / "key"

    def test_without_the_key_send_names_the_option(self, setup: tuple[Path, Path]) -> None:
        config, _ = setup
        result = CliRunner().invoke(
            cli, ["send", "asym", "--config", str(config), "--url", "http://127.0.0.1:9"]
        )
        assert result.exit_code == 1
        assert "cannot sign for trigger 'asym'" in result.output
        assert "pass it with --private-key FILE" in result.output

    def test_with_the_key_it_signs_and_sends(self, setup: tuple[Path, Path]) -> None:
        config, key = setup
        args = ["send", "asym", "--config", str(config), "--private-key", str(key)]
        result = CliRunner().invoke(cli, [*args, "--url", "http://127.0.0.1:9"])
        # signed: it got as far as the (absent) gateway
        assert result.exit_code == 1
        assert "cannot reach hookrun at http://127.0.0.1:9" in result.output


class TestSendHeaders:
    """``--header`` goes out as given, also where the signer would set that header."""

    @pytest.fixture
    def seen(self) -> Iterator[tuple[str, dict[str, str]]]:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        headers: dict[str, str] = {}

        class Gateway(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                headers.update({k.lower(): v for k, v in self.headers.items()})
                self.rfile.read(int(self.headers["content-length"]))
                self.send_response(400)
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args: object) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Gateway)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_port}", headers
        finally:
            server.shutdown()
            server.server_close()

    def send(self, url: str, *headers: str) -> Result:
        args = ["send", "feature-extraction", "--config", "examples/hookrun.yaml", "--url", url]
        return CliRunner().invoke(cli, [*args, *(f"-H{h}" for h in headers)])

    def test_a_given_signature_header_replaces_the_signers(self, seen) -> None:
        url, headers = seen
        self.send(url, "x-hub-signature-256: sha256=00", "X-Extra: 1")
        assert headers["x-hub-signature-256"] == "sha256=00"
        assert headers["x-extra"] == "1"

    def test_without_one_the_signer_signs(self, seen) -> None:
        url, headers = seen
        self.send(url)
        assert headers["x-hub-signature-256"].startswith("sha256=")
        assert headers["x-hub-signature-256"] != "sha256=00"
