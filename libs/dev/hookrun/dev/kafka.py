"""Local single-node Apache Kafka (KRaft) for development and tests: start, stop, ensure, the CLI."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

from hookrun.dev.kafka_dist import (
    BROKER_SETTINGS,
    DEFAULT_BOOTSTRAP,
    DEFAULT_PORT,
    JVM_OPTS,
    KAFKA_VERSION,
    START_TIMEOUT_S,
    STOP_TIMEOUT_S,
    KafkaError,
    cluster_id,
    configured_ports,
    fetch,
    java_binary,
)
from hookrun.dev.kafka_net import (
    broker_answers,
    env_security,
    free_port,
    port_free,
    wait_for_broker,
    wait_port_free,
)
from hookrun.dev.procs import parent_death_signal

log = logging.getLogger("hookrun.dev.kafka")


def _pid_alive(pid: int) -> bool:
    proc = Path(f"/proc/{pid}")
    if Path("/proc/self").exists():
        try:
            stat = (proc / "stat").read_text()
            # A zombie has exited (and closed its sockets); it only waits to be reaped.
            if stat.rpartition(")")[2].split()[0] == "Z":
                return False
            cmdline = (proc / "cmdline").read_bytes()
            # An empty cmdline is a process in the middle of exiting, which may still hold its
            # ports; any other command means the pid was reused by something else.
            return not cmdline or b"kafka.Kafka" in cmdline
        except OSError:
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"({path} does not exist)"
    return "\n".join(text.splitlines()[-lines:]) or f"({path} is empty)"


class LocalKafka:
    """One local Kafka broker+controller process, owned through a pid file in its data dir."""

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        port: int = DEFAULT_PORT,
        controller_port: int | None = None,
        version: str = KAFKA_VERSION,
        *,
        die_with_parent: bool = False,
    ) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.port = port
        self.controller_port = controller_port
        self.version = version
        # For brokers owned by a test run: if pytest is killed (a CI timeout sends SIGTERM, which
        # skips fixture teardown), the kernel stops the broker too instead of orphaning it.
        self.die_with_parent = die_with_parent
        self._proc: subprocess.Popen[bytes] | None = None
        #: more options of `kafka-storage format`, e.g. the SCRAM users of a secured broker
        self.format_options: list[str] = []
        self.cluster_id: str | None = None  # formats the data dir (None: a new one)
        self.settings: Mapping[str, str] = BROKER_SETTINGS

    def __repr__(self) -> str:
        return f"LocalKafka(port={self.port}, data_dir={str(self.data_dir)!r}, pid={self.pid})"

    @property
    def bootstrap(self) -> str:
        """The address clients connect to."""
        return f"127.0.0.1:{self.port}"

    @property
    def pid_file(self) -> Path:
        return self.data_dir / "kafka.pid"

    @property
    def server_log(self) -> Path:
        return self.data_dir / "server.log"

    @property
    def stdout_log(self) -> Path:
        return self.data_dir / "kafka.out"

    @property
    def log_dir(self) -> Path:
        return self.data_dir / "data"

    @property
    def pid(self) -> int | None:
        """The broker's pid if it is running, else None."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        if self._proc is not None and self._proc.pid == pid and self._proc.poll() is not None:
            return None  # our own child exited (poll() also reaped it)
        return pid if _pid_alive(pid) else None

    def is_running(self) -> bool:
        """Return True if the broker process of this data dir is alive (it may not answer yet)."""
        return self.pid is not None

    def answers(self, timeout: float = 2.0) -> bool:
        """Return True if the broker serves metadata requests."""
        return broker_answers(self.bootstrap, timeout)

    def start(self, timeout: float = START_TIMEOUT_S, *, wait: bool = True) -> LocalKafka:
        """Start the broker (keeping any data already in data_dir) and wait until it answers.

        Does nothing but wait if it already runs. Raises KafkaError with the tail of the broker
        log if the process dies or does not answer within ``timeout`` s. ``wait=False``: only
        start the process (a cluster's nodes answer only once they all run)."""
        if self.is_running():
            if wait:
                self.wait_ready(timeout)
            return self
        libs = fetch(self.version)
        java = java_binary()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.pid_file.unlink(missing_ok=True)
        if not wait_port_free(self.port, 5.0):
            raise KafkaError(f"port {self.port} is already in use; pick another port")
        self._pick_controller_port()
        props = self._write_config()
        classpath = f"{libs}{os.sep}*"
        if not (self.log_dir / "meta.properties").exists():
            self._format(java, classpath, props)
        cmd = [
            java,
            *JVM_OPTS,
            f"-Dlog4j.configuration={(self.data_dir / 'log4j.properties').as_uri()}",
            "-cp",
            classpath,
            "kafka.Kafka",
            str(props),
        ]
        started = time.monotonic()
        with self.stdout_log.open("ab") as out:
            # A new session keeps Ctrl-C in a terminal (or pytest's process group) from reaching
            # the broker: whoever started it stops it by pid, in order.
            self._proc = subprocess.Popen(
                cmd,
                cwd=self.data_dir,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=parent_death_signal() if self.die_with_parent else None,
            )
        self.pid_file.write_text(f"{self._proc.pid}\n")
        if not wait:
            return self
        try:
            self.wait_ready(timeout)
        except BaseException:
            self.kill()  # never leave a half-started broker behind
            raise
        log.info(
            "Kafka %s answers on %s after %.1f s (pid %s, data %s)",
            self.version,
            self.bootstrap,
            time.monotonic() - started,
            self._proc.pid,
            self.data_dir,
        )
        return self

    def wait_ready(self, timeout: float = START_TIMEOUT_S) -> None:
        """Block until the broker answers; raise KafkaError if it dies or times out."""
        deadline = time.monotonic() + timeout
        while True:
            if self.answers(timeout=2.0):
                return
            if not self.is_running():
                raise KafkaError(self._failure("exited during start-up"))
            if time.monotonic() >= deadline:
                raise KafkaError(self._failure(f"did not answer within {timeout:.0f} s"))
            time.sleep(0.2)

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> bool:
        """Stop the broker with SIGTERM (SIGKILL after ``timeout``); return False if not running."""
        return self._signal(signal.SIGTERM, timeout)

    def kill(self) -> bool:
        """Kill the broker with SIGKILL, as a crash would; return False if not running."""
        return self._signal(signal.SIGKILL, 5.0)

    def _signal(self, sig: signal.Signals, timeout: float) -> bool:
        pid = self.pid
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        if not self._wait_exit(pid, timeout) and sig != signal.SIGKILL:
            log.warning("Kafka (pid %s) ignored SIGTERM for %.0f s; killing it", pid, timeout)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            self._wait_exit(pid, 5.0)
        self.pid_file.unlink(missing_ok=True)
        self._proc = None
        return True

    def _wait_exit(self, pid: int, timeout: float) -> bool:
        if self._proc is not None and self._proc.pid == pid:
            try:
                self._proc.wait(timeout)  # also reaps our child, so no zombie stays
                return True
            except subprocess.TimeoutExpired:
                return False
        deadline = time.monotonic() + timeout
        while _pid_alive(pid):
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.1)
        return True

    def _pick_controller_port(self) -> None:
        if self.controller_port is not None:
            return
        # Keep the controller port of an earlier run on this data dir when it is still free.
        previous = configured_ports(self.data_dir).get("CONTROLLER")
        if previous is not None and port_free(previous):
            self.controller_port = previous
        else:
            self.controller_port = free_port()

    def _listener_config(self) -> list[str]:
        """The listeners (a subclass secures them): plaintext on ``port``, the controller's own."""
        port, cport = self.port, self.controller_port
        return [
            f"listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{cport}",
            f"advertised.listeners=PLAINTEXT://127.0.0.1:{port}",
            "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name=PLAINTEXT",
        ]

    def _role_config(self) -> list[str]:
        """Its roles and the controller quorum (a cluster's nodes name every voter)."""
        return [
            "process.roles=broker,controller",
            "node.id=1",
            f"controller.quorum.voters=1@127.0.0.1:{self.controller_port}",
        ]

    def _write_config(self) -> Path:
        lines = [
            "# Written by hookrun.dev.kafka on every start; edits are overwritten.",
            *self._role_config(),
            *self._listener_config(),
            "controller.listener.names=CONTROLLER",
            f"log.dirs={self.log_dir.as_posix()}",
            *(f"{key}={value}" for key, value in self.settings.items()),
        ]
        props = self.data_dir / "server.properties"
        props.write_text("\n".join(lines) + "\n")
        # The broker log goes to a file: a test run or `make run` should not drown in it, and
        # a failed start quotes its tail.
        log4j = self.data_dir / "log4j.properties"
        log4j.write_text(
            "\n".join(
                [
                    "log4j.rootLogger=INFO, file",
                    "log4j.appender.file=org.apache.log4j.RollingFileAppender",
                    f"log4j.appender.file.File={self.server_log.as_posix()}",
                    "log4j.appender.file.MaxFileSize=20MB",
                    "log4j.appender.file.MaxBackupIndex=2",
                    "log4j.appender.file.layout=org.apache.log4j.PatternLayout",
                    "log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n",
                    "log4j.logger.kafka.request.logger=WARN",
                    "log4j.logger.kafka.controller=INFO",
                    "log4j.logger.state.change.logger=WARN",
                    "",
                ]
            )
        )
        return props

    def _format(self, java: str, classpath: str, props: Path) -> None:
        # Short-lived tool: a small heap and the C1 compiler only start it faster.
        cmd = [
            java,
            "-Xmx256m",
            "-XX:TieredStopAtLevel=1",
            f"-Dlog4j.configuration={(self.data_dir / 'log4j.properties').as_uri()}",
            "-cp",
            classpath,
            "kafka.tools.StorageTool",
            "format",
            "-t",
            self.cluster_id or cluster_id(),
            "-c",
            str(props),
            *self.format_options,
        ]
        result = subprocess.run(
            cmd,
            cwd=self.data_dir,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        if result.returncode != 0:
            raise KafkaError(
                f"formatting {self.log_dir} failed (exit {result.returncode}):\n"
                f"{result.stdout[-3000:]}\n--- {self.server_log} ---\n{_tail(self.server_log)}"
            )

    def _failure(self, what: str) -> str:
        # The root cause of a failed start sits above long stack traces, so quote the errors
        # and their causes before the plain tail.
        try:
            lines = self.server_log.read_text(errors="replace").splitlines()
        except OSError:
            lines = []
        causes = [
            line[:300]
            for line in lines
            if " ERROR " in line or " FATAL " in line or line.startswith("Caused by:")
        ]
        return (
            f"Kafka on {self.bootstrap} {what}.\n"
            f"--- errors in {self.server_log} ---\n" + "\n".join(causes[:12]) + "\n"
            f"--- tail of {self.server_log} ---\n{_tail(self.server_log, 25)}\n"
            f"--- tail of {self.stdout_log} ---\n{_tail(self.stdout_log, 15)}"
        )


def repo_root(start: Path | None = None) -> Path:
    """Return the nearest directory at or above ``start`` (default cwd) holding ``.git``."""
    here = (start or Path.cwd()).resolve()
    for candidate in (here, *here.parents):
        if (candidate / ".git").exists():
            return candidate
    return here


def state_dir() -> Path:
    """Return where `ensure` keeps the dev broker (``HOOKRUN_STATE_DIR`` or <repo>/.hookrun)."""
    env = os.environ.get("HOOKRUN_STATE_DIR")
    return Path(env).expanduser().resolve() if env else repo_root() / ".hookrun"


def default_data_dir() -> Path:
    """Return the data dir of the dev broker that `ensure`, `start` and `stop` manage."""
    return state_dir() / "kafka"


def ensure(data_dir: Path | None = None, timeout: float = START_TIMEOUT_S) -> str:
    """Return a bootstrap address with a broker behind it, starting a local one if needed.

    Order: ``KAFKA_BOOTSTRAP_SERVERS`` (waited for, never started), a broker already answering
    on 127.0.0.1:9092, else a new local broker in ``data_dir`` (default_data_dir()) left running.
    """
    return _ensure(data_dir, timeout)[0]


@contextlib.contextmanager
def broker(
    data_dir: Path | None = None,
    timeout: float = START_TIMEOUT_S,
    *,
    on_start: Callable[[], None] | None = None,
) -> Iterator[str]:
    """:func:`ensure` for the time of a ``with`` block: a broker started here is stopped, by pid,
    at its end; a configured or already running one is left alone. ``on_start`` runs first when
    a broker has to be started."""
    bootstrap, started = _ensure(data_dir, timeout, on_start=on_start)
    try:
        yield bootstrap
    finally:
        if started is not None:
            started.stop()


def _ensure(
    data_dir: Path | None,
    timeout: float,
    *,
    on_start: Callable[[], None] | None = None,
) -> tuple[str, LocalKafka | None]:
    """The bootstrap address, and the broker if this call started it."""
    configured = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "").strip()
    if configured:
        wait_for_broker(configured, timeout, security=env_security())
        return configured, None
    if broker_answers(DEFAULT_BOOTSTRAP):
        return DEFAULT_BOOTSTRAP, None
    if on_start is not None:
        on_start()
    kafka = LocalKafka(data_dir or default_data_dir(), port=DEFAULT_PORT)
    return kafka.start(timeout).bootstrap, kafka


def _iter_status(kafka: LocalKafka, bootstrap: str) -> Iterator[str]:
    answers = broker_answers(bootstrap)
    yield f"bootstrap {bootstrap}: {'broker answers' if answers else 'no broker answers'}"
    pid = kafka.pid
    if pid is not None:
        yield f"local broker pid {pid} (data {kafka.data_dir}, log {kafka.server_log})"
    else:
        yield f"no local broker running from {kafka.data_dir}"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return the process exit code."""
    parser = argparse.ArgumentParser(
        prog="python -m hookrun.dev.kafka",
        description=f"Manage a local single-node Apache Kafka {KAFKA_VERSION} (KRaft).",
        epilog="Addresses go to stdout, progress to stderr. status exits 3 if nothing answers.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("fetch", help="download the broker jars with Maven (once)")
    for name, text in [
        ("start", "start the local broker in the background"),
        ("stop", "stop the local broker started from the data dir"),
        ("status", "tell whether a broker answers and which pid is ours"),
        ("ensure", "reuse KAFKA_BOOTSTRAP_SERVERS or 127.0.0.1:9092, else start one"),
    ]:
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument(
            "--data-dir", type=Path, default=None, help="default: <repo>/.hookrun/kafka"
        )
        if name == "start":
            cmd.add_argument("--port", type=int, default=DEFAULT_PORT)
            cmd.add_argument("--controller-port", type=int, default=None)
        if name in ("start", "ensure"):
            cmd.add_argument("--timeout", type=float, default=START_TIMEOUT_S)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="kafka: %(message)s", stream=sys.stderr)

    try:
        if args.command == "fetch":
            print(fetch())
            return 0
        data_dir = args.data_dir or default_data_dir()
        if args.command == "start":
            kafka = LocalKafka(data_dir, args.port, args.controller_port).start(args.timeout)
            print(kafka.bootstrap)
            return 0
        if args.command == "ensure":
            print(ensure(data_dir, args.timeout))
            return 0
        kafka = LocalKafka(data_dir, configured_ports(data_dir).get("PLAINTEXT", DEFAULT_PORT))
        if args.command == "stop":
            if kafka.stop():
                log.info("stopped the broker of %s", kafka.data_dir)
            else:
                log.info("no broker of ours is running (%s)", kafka.data_dir)
            return 0
        bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "").strip() or kafka.bootstrap
        for line in _iter_status(kafka, bootstrap):
            print(line)
        return 0 if broker_answers(bootstrap) else 3
    except KafkaError as exc:
        log.error("%s", exc)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
