"""Composition root of the runner: wires it to Kafka, serves its health, runs the process."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import signal
import socket
import sys
import time
from pathlib import Path

from hookrun.config import ConfigError, CopyPipelineAction, HookrunConfig, load_config
from hookrun.events import logs, topics, tracing
from hookrun.events.clients import GroupConsumer
from hookrun.events.configs import ConfigRecorded
from hookrun.events.health import serve_health
from hookrun.events.kafka import Publisher, consumer_settings, ensure_topics_forever
from hookrun.runner import metrics
from hookrun.runner.config import Settings
from hookrun.runner.consumer import Runner
from hookrun.runner.isolation import Isolation, IsolationError, build_isolation
from hookrun.runner.pipelines import KafkaPipelineIndex, waiting
from hookrun.runner.schedules import Scheduler
from hookrun.runner.versions import KafkaConfigStore

log = logging.getLogger("hookrun.runner")


def new_runner_id() -> str:
    """`runner-<host>-<pid>-<random>`: each life of a process holds its own leases."""
    return f"runner-{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


async def serve(settings: Settings, config: HookrunConfig, isolation: Isolation) -> int:
    """Run one runner until SIGTERM/SIGINT; returns the exit code."""
    bootstrap, ns = settings.kafka_bootstrap_servers, settings.hookrun_namespace
    await ensure_topics_forever(bootstrap, namespace=ns)
    # Its own version too: a runner that takes its partitions over with another config
    # finds the version this one was performing.
    recorded = ConfigRecorded(config_version=config.config_version, text=config.source_text)
    publisher = Publisher(bootstrap, "runner", namespace=ns, first=[recorded])
    await publisher.start(wait=True)
    index = KafkaPipelineIndex(bootstrap, namespace=ns)
    if any(isinstance(a, CopyPipelineAction) for t in config.triggers for a in t.actions):
        # Read ahead, so that the first copy does not wait for it; otherwise the definitions
        # are read only if a run launched with another config version copies one.
        await index.start()
    configs = KafkaConfigStore(bootstrap, namespace=ns)
    await configs.start()
    consumer = GroupConsumer(
        **{
            **consumer_settings(bootstrap, "runner", group=settings.group_id),
            "session_timeout_ms": settings.hookrun_runner_session_timeout_ms,
            "heartbeat_interval_ms": max(100, settings.hookrun_runner_session_timeout_ms // 10),
        }
    )
    runner_id = new_runner_id()
    runner = Runner(
        config=config,
        consumer=consumer,
        publisher=publisher,
        index=index,
        data_dir=settings.hookrun_data_dir,
        runner_id=runner_id,
        lease_s=settings.hookrun_runner_lease_s,
        concurrency=settings.hookrun_runner_concurrency,
        max_backlog=settings.hookrun_runner_max_backlog or None,
        max_output_bytes=settings.hookrun_max_output_bytes,
        max_json_depth=settings.hookrun_max_json_depth,
        isolation=isolation,
        configs=configs,
    )
    # A copy waits while its source's payload input is read; the read lets it start.
    index.when_read(
        lambda: runner.reconcile(waiting(list(runner.table.runs.values()), runner.owns))
    )
    metrics.watch(runner.executor.running, runner.executor.backlog, lambda: len(runner.table.runs))
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, runner.stopping.set)
    health = None
    if settings.hookrun_metrics_port:
        health = await serve_health(
            settings.hookrun_metrics_port, runner.health, host=settings.hookrun_metrics_host
        )
    log.info("runner %s consuming %s", runner_id, topics.named(topics.RUNS, ns))
    schedules = None
    if any(trigger.schedule is not None for trigger in config.triggers):
        scheduler = Scheduler(
            config=config,
            consumer=GroupConsumer(
                **consumer_settings(bootstrap, "runner", group=settings.schedules_group_id)
            ),
            publisher=publisher,
            bootstrap=bootstrap,
            tick_s=settings.hookrun_schedule_tick_s,
        )
        schedules = asyncio.create_task(scheduler.run(runner.stopping))

        def ended(task: asyncio.Task[None]) -> None:
            # A scheduler that fails ends the session, which restarts as after a Kafka failure.
            if not task.cancelled() and (exc := task.exception()) and not runner.stopping.is_set():
                runner.fail(exc)

        schedules.add_done_callback(ended)
    try:
        await runner.run()
    except Exception:
        # An append no retry can mend (logged by fail): end the session with 1.
        if runner.fatal is None and not runner.stopping.is_set():
            raise
    except asyncio.CancelledError:
        # After such a failure aiokafka's stop() can raise even this, from its fetcher.
        if runner.fatal is None:
            raise
    finally:
        if schedules is not None:
            runner.stopping.set()
            with contextlib.suppress(Exception):
                await schedules
        for close in (runner.executor.stop, configs.stop, index.stop, publisher.stop):
            try:
                await close()
            except BaseException as exc:
                # After a Kafka failure the session is discarded anyway; aiokafka's stop() can
                # then raise (even CancelledError from its fetcher), which must not end the
                # process instead of restarting the session.
                if runner.fatal is None:
                    raise
                log.warning("closing a failed session: %r", exc)
        if health is not None:
            health.close()
    return 1 if runner.fatal is not None else 0


def main() -> None:
    """Entry point: `python -m hookrun.runner`."""
    settings = Settings()
    logs.configure("runner", settings.log_level, settings.log_format)
    tracing.start("runner")
    logging.getLogger("aiokafka").setLevel(
        logging.WARNING if settings.log_level.upper() != "TRACE" else logging.DEBUG
    )
    try:
        config = load_config(settings.hookrun_config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        sys.exit(2)
    try:
        # Probed once here: a broken sandbox is found at start, not per execution.
        isolation = build_isolation(
            user=settings.hookrun_execution_user,
            sandbox=settings.hookrun_execution_sandbox,
            data_dir=settings.hookrun_data_dir,
            config_dir=Path(config.config_dir),
        )
    except IsolationError as exc:
        print(f"runner: {exc}", file=sys.stderr)
        sys.exit(2)
    # An append Kafka refused for good (a fenced or closed producer; a broker that is merely
    # away is waited for) ends the session with 1: its state is dropped and a fresh session
    # replays from the committed watermarks, exactly as a restarted process would. `make run`
    # supervises nothing, so the process must not die.
    while (code := asyncio.run(serve(settings, config, isolation))) == 1:
        log.warning("restarting the runner session after a Kafka failure")
        time.sleep(1.0)
    sys.exit(code)
