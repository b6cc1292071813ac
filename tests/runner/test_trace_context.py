"""Every event the runner appends for a run carries the launch's trace context, also the events
a successor appends after replaying the run (on the in-memory broker)."""

from pathlib import Path

from aiokafka import TopicPartition

from hookrun.events import codec, topics
from hookrun.events.base import utcnow
from hookrun.events.memory import MemoryBroker
from hookrun.events.runs import ExecutionFinished, LaunchRequest, RunStatus, TriggerLaunched
from tests.events.tally import steps_until
from tests.runner.test_runner_reconcile import NS, VERSION, _on_broker

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


async def test_a_successors_events_carry_the_launchs_trace_context(tmp_path: Path) -> None:
    broker = MemoryBroker()
    broker.create_topics(NS, partitions=1)
    launched = TriggerLaunched(
        run_id="run-1",
        trigger_id="noop",
        config_version=VERSION,
        request=LaunchRequest(method="POST", path="/", body_b64=""),
        traceparent=TRACEPARENT,
        tracestate="vendor=1",
    )
    await broker.publisher(NS, "gateway").publish([launched])
    # the first runner starts the run, then dies with its execution unfinished
    first, executor = _on_broker(tmp_path, broker)
    await first.loop.start()
    await steps_until(first.loop, lambda: bool(executor.submitted))
    await first.loop.close()
    # a successor replays the run and reports the execution it took over as finished
    successor, executor = _on_broker(tmp_path, broker)
    await successor.loop.start()
    await steps_until(successor.loop, lambda: successor.loop.ready and executor.submitted)
    [execution_id] = executor.submitted
    now = utcnow()
    await successor.report(
        [
            ExecutionFinished(
                run_id="run-1",
                execution_id=execution_id,
                status=RunStatus.SUCCESS,
                exit_code=0,
                started_at=now,
                completed_at=now,
            )
        ]
    )
    await successor.loop.close()

    tp = TopicPartition(topics.named(topics.RUNS, NS), 0)
    events = [codec.decode(r.value, r.headers) for r in broker.records(tp.topic, 0)]
    types = [type(e).type for e in events]
    assert types[0] == "hookrun.trigger.launched" and types[-1] == "hookrun.run.finished"
    assert "hookrun.run.started" in types and "hookrun.action.completed" in types
    assert {(e.traceparent, e.tracestate) for e in events} == {(TRACEPARENT, "vendor=1")}
