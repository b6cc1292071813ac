"""The projection as a pure fold: one decoded event (and where it sits in the log) -> SQL row changes.

Statements use ``?`` placeholders and only SQL that SQLite and PostgreSQL both accept (upserts with
``ON CONFLICT``), so each store runs them as they are. Replaying an event is harmless: inserts
ignore conflicts and counters are recomputed from the rows, never incremented; the store also
skips records below the offset it has stored for their partition.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, NamedTuple

import orjson

from hookrun.events import (
    ActionCompleted,
    DeliveryAttempted,
    DeliveryExhausted,
    Event,
    ExecutionCreated,
    ExecutionFinished,
    ExecutionHeartbeat,
    ExecutionStarted,
    PipelineCreated,
    PipelineFinished,
    PipelineNodeSkipped,
    RedeliveryRequested,
    RunCancelRequested,
    RunFinished,
    RunStarted,
    TriggerLaunched,
    TriggerLogged,
    topics,
)
from hookrun.events.maps import EventMap

Params = tuple[Any, ...]


# Op, Position (and store.Applied) are NamedTuples, not frozen dataclasses: a few are built per
# event, and a frozen dataclass costs several times a tuple to create.
class Op(NamedTuple):
    """One SQL statement and its parameters."""

    sql: str
    params: Params


class Position(NamedTuple):
    """Where a record sits in the log, and the record as a structured CloudEvent (JSON text)."""

    topic: str
    partition: int
    offset: int
    cloudevent: str


def ts(moment: datetime | None) -> str | None:
    """A timestamp as fixed-width UTC text, so text order is time order in both databases.

    Naive datetimes are taken as UTC. Formatted by hand: ``strftime`` after ``astimezone``
    cost more than a whole row insert (called several times per event).
    """
    if moment is None:
        return None
    offset = moment.utcoffset()
    if offset:
        moment = moment - offset  # the same instant, its fields now read in UTC
    return "%04d-%02d-%02dT%02d:%02d:%02d.%06dZ" % (  # noqa: UP031 (%-format: about 2x an f-string here)
        moment.year,
        moment.month,
        moment.day,
        moment.hour,
        moment.minute,
        moment.second,
        moment.microsecond,
    )


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


def cloudevent_json(value: bytes | None, headers: Any) -> str:
    """The record as a structured-mode CloudEvent, built without re-parsing the data.

    Called only for records that decoded, so ``value`` is a JSON object already and the
    headers are UTF-8.
    """
    doc: dict[str, str] = {}
    ctype = "application/json"
    for name, raw in headers or ():
        if name[:3] == "ce_":
            doc[name[3:]] = raw.decode() if type(raw) is bytes else _text(raw)
        elif name == "content-type":
            ctype = raw.decode() if type(raw) is bytes else _text(raw)
    doc["datacontenttype"] = ctype
    head = orjson.dumps(doc)
    return (head[:-1] + b',"data":' + (value or b"null") + b"}").decode()


def _text(raw: Any) -> str:
    return raw.decode() if isinstance(raw, bytes | bytearray) else str(raw)


# Valohai's run-info vocabulary. A run is final once RunFinished arrived or every action it
# announced (RunStarted.action_count) completed. Actions of a finished, unsuccessful run that
# never completed (canceled, aborted) count as failed. One statement recomputes the counters from
# the action rows (never incremented) and the status from them: the aggregate without GROUP BY
# always yields one row, so a run without actions is updated too. Params: (run_id, run_id).
RECOMPUTE_STATUS = (
    "UPDATE runs SET actions_ok = c.ok, actions_failed = c.n - c.ok, info_status = CASE"
    " WHEN run_status IS NULL AND (action_count IS NULL OR c.n < action_count) THEN 'pending'"
    " WHEN c.ok = 0 AND (c.n > 0 OR run_status IS NULL OR run_status <> 'SUCCESS') THEN 'error'"
    " WHEN c.n = c.ok AND (run_status IS NULL OR run_status = 'SUCCESS') THEN 'completed'"
    " ELSE 'complete_with_error' END"
    " FROM (SELECT COUNT(CASE WHEN status = 'SUCCESS' THEN 1 END) AS ok, COUNT(*) AS n"
    " FROM actions WHERE run_id = ?) AS c"
    " WHERE runs.run_id = ?"
)
#: ``RECOMPUTE_STATUS`` of several runs in one statement (the rebuild's bulk form, see
#: ``store.bulk_sql``, which repeats ``(?)`` once per run id). Runs without actions count zero.
RECOMPUTE_STATUS_BULK = (
    "UPDATE runs SET actions_ok = c.ok, actions_failed = c.n - c.ok, info_status = CASE"
    " WHEN run_status IS NULL AND (action_count IS NULL OR c.n < action_count) THEN 'pending'"
    " WHEN c.ok = 0 AND (c.n > 0 OR run_status IS NULL OR run_status <> 'SUCCESS') THEN 'error'"
    " WHEN c.n = c.ok AND (run_status IS NULL OR run_status = 'SUCCESS') THEN 'completed'"
    " ELSE 'complete_with_error' END"
    " FROM (SELECT v.column1 AS run, COUNT(CASE WHEN a.status = 'SUCCESS' THEN 1 END) AS ok,"
    " COUNT(a.run_id) AS n FROM (VALUES (?)) AS v LEFT JOIN actions AS a ON a.run_id = v.column1"
    " GROUP BY v.column1) AS c"
    " WHERE runs.run_id = c.run"
)
INSERT_EVENT = (
    "INSERT INTO events (topic, part, off, run_id, type, at, event_id, doc)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"
)
INSERT_LOG = (
    "INSERT INTO trigger_log (entry_id, trigger_id, at, outcome, reason, status_code, method,"
    " remote_addr, content_length, delivery_id, run_id, is_test)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"
)
INSERT_RESULT = (
    "INSERT INTO results (run_id, object_id, action_index, seq, entry) VALUES (?, ?, ?, ?, ?)"
    " ON CONFLICT DO NOTHING"
)
INSERT_ATTEMPT = (
    "INSERT INTO attempts (run_id, message_id, subscription_id, attempt, outcome,"
    " status_code, duration_ms, response_excerpt, error, at, next_attempt_at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"
)
INSERT_SKIPPED = (
    "INSERT INTO skipped_nodes (pipeline_id, node, run_id, reason) VALUES (?, ?, ?, ?)"
    " ON CONFLICT DO NOTHING"
)
INSERT_RUN = (
    "INSERT INTO runs (run_id, trigger_id, config_version, received_at, is_test,"
    " delivery_id, account, part, info_status, actions_ok, actions_failed)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'pending', 0, 0) ON CONFLICT DO NOTHING"
)
UPDATE_RUN_STARTED = (
    "UPDATE runs SET action_count = ?, runner_id = ?,"
    " started_at = COALESCE(started_at, ?) WHERE run_id = ?"
)
INSERT_EXECUTION = (
    "INSERT INTO executions (execution_id, run_id, action_index, step, pipeline_id, node,"
    " attempt, params, status, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'CREATED', ?)"
    " ON CONFLICT DO NOTHING"
)
UPDATE_EXECUTION_STARTED = (
    "UPDATE executions SET status = CASE WHEN status = 'CREATED' THEN 'RUNNING'"
    " ELSE status END, runner_id = ?, pid = ?, started_at = COALESCE(started_at, ?),"
    " lease_until = ? WHERE execution_id = ?"
)
UPDATE_EXECUTION_LEASE = (
    "UPDATE executions SET lease_until = ?, runner_id = ? WHERE execution_id = ?"
)
UPDATE_EXECUTION_FINISHED = (
    "UPDATE executions SET status = ?, exit_code = ?,"
    " started_at = COALESCE(?, started_at), completed_at = ?, duration_ms = ?,"
    " output = ?, stdout_tail = ?, stderr_tail = ?, error = ?"
    # first writer wins, as in the runner: a late report of an execution another runner
    # already aborted changes nothing
    " WHERE execution_id = ? AND completed_at IS NULL"
)
UPSERT_ACTION = (
    "INSERT INTO actions (run_id, action_index, action, status, result, error,"
    " completed_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (run_id, action_index)"
    " DO UPDATE SET status = excluded.status, result = excluded.result,"
    " error = excluded.error, completed_at = excluded.completed_at"
)
UPDATE_RUN_FINISHED = (
    "UPDATE runs SET run_status = ?, started_at = ?, completed_at = ?, duration_ms = ?,"
    " execution_count = ?, error = ?, failed_execution_id = ? WHERE run_id = ?"
)
UPSERT_DELIVERY = (
    "INSERT INTO deliveries (run_id, message_id, subscription_id, url, state, attempts,"
    " last_status_code, last_attempt_at, next_attempt_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (run_id, message_id, subscription_id) DO UPDATE SET url = excluded.url,"
    " state = excluded.state, attempts = excluded.attempts,"
    " last_status_code = excluded.last_status_code,"
    " last_attempt_at = excluded.last_attempt_at,"
    " next_attempt_at = excluded.next_attempt_at"
)
UPDATE_DELIVERY_EXHAUSTED = (
    "UPDATE deliveries SET state = 'exhausted', next_attempt_at = NULL, last_error = ?"
    " WHERE run_id = ? AND message_id = ? AND subscription_id = ?"
)
#: Inserts that only add rows (ON CONFLICT DO NOTHING) to tables no other statement of the
#: projection reads or changes: within a transaction they can run in any order, after the rest.
APPEND_ONLY = frozenset({INSERT_EVENT, INSERT_LOG, INSERT_RESULT, INSERT_ATTEMPT, INSERT_SKIPPED})

Statement = tuple[str, list[Params]]


def statements(batch: Iterable[tuple[str | None, Sequence[Op]]]) -> list[Statement]:
    """Group the row changes of a batch, applied in one transaction, into ``executemany`` calls.

    ``batch`` is ``(run_id, ops)`` per event in log order. Executing the result in order leaves
    the same rows as executing every op in order, because:

    - Updates and upserts of one run keep their order. Those of different runs touch different
      rows (runs, actions and deliveries by run id; executions and pipelines by ids that belong
      to one run), so the n-th op of every run forms round n, and one round's ops, grouped by
      statement, commute.
    - ``APPEND_ONLY`` inserts read nothing and nothing reads them here: they go after, grouped.
    - The status recompute reads only the run's final rows: it runs once per run, last.

    Ops of events without a run id (``None``) are all kept in one order.
    """
    rounds: list[dict[str, list[Params]]] = []
    depth: dict[str | None, int] = {}
    appends: dict[str, list[Params]] = {}
    recompute: dict[Params, None] = {}
    for run_id, ops in batch:
        for op in ops:
            if op.sql == RECOMPUTE_STATUS:
                recompute[op.params] = None
            elif op.sql in APPEND_ONLY:
                appends.setdefault(op.sql, []).append(op.params)
            else:
                n = depth.get(run_id, 0)
                depth[run_id] = n + 1
                if n == len(rounds):
                    rounds.append({})
                rounds[n].setdefault(op.sql, []).append(op.params)
    out = [group for round_ in rounds for group in round_.items()]
    out.extend(appends.items())
    if recompute:
        out.append((RECOMPUTE_STATUS, list(recompute)))
    return out


def _status(run_id: str) -> Op:
    return Op(RECOMPUTE_STATUS, (run_id, run_id))


def fold(event: Event, at: Position) -> list[Op]:
    """Return the row changes ``event`` causes; every event of a run is also kept raw."""
    handler = HANDLERS.get(type(event))
    if handler is None:
        return []
    ops: list[Op] = []
    run_id = getattr(event, "run_id", None)
    if run_id is not None and type(event).topic == topics.RUNS:
        ops.append(
            Op(
                INSERT_EVENT,
                (
                    at.topic,
                    at.partition,
                    at.offset,
                    run_id,
                    event.type,
                    ts(event.occurred_at),
                    event.event_id,
                    at.cloudevent,
                ),
            )
        )
    ops.extend(handler(event, at))
    return ops


def _logged(e: TriggerLogged, at: Position) -> list[Op]:
    return [
        Op(
            INSERT_LOG,
            (
                e.event_id,
                e.trigger_id,
                ts(e.occurred_at),
                e.outcome,
                e.reason,
                e.status_code,
                e.method,
                e.remote_addr,
                e.content_length,
                e.delivery_id,
                e.run_id,
                0,
            ),
        )
    ]


def _launched(e: TriggerLaunched, at: Position) -> list[Op]:
    received = ts(e.occurred_at)
    return [
        Op(
            INSERT_RUN,
            (
                e.run_id,
                e.trigger_id,
                e.config_version,
                received,
                int(e.is_test),
                e.delivery_id,
                e.account,
                at.partition,
            ),
        ),
        Op(
            INSERT_LOG,
            (
                e.event_id,
                e.trigger_id,
                received,
                "accepted",
                "test launch (conditions skipped)" if e.is_test else "all conditions passed",
                202,
                e.request.method,
                e.request.remote_addr,
                len(e.request.body_b64) * 3 // 4 - e.request.body_b64[-2:].count("="),
                e.delivery_id,
                e.run_id,
                int(e.is_test),
            ),
        ),
    ]


def _started(e: RunStarted, at: Position) -> list[Op]:
    return [
        Op(
            UPDATE_RUN_STARTED,
            (e.action_count, e.runner_id, ts(e.occurred_at), e.run_id),
        ),
        _status(e.run_id),
    ]


def _execution_created(e: ExecutionCreated, at: Position) -> list[Op]:
    ops = [
        Op(
            INSERT_EXECUTION,
            (
                e.execution_id,
                e.run_id,
                e.action_index,
                e.step,
                e.pipeline_id,
                e.node,
                e.attempt,
                _json(e.params),
                ts(e.occurred_at),
            ),
        )
    ]
    if e.pipeline_id is None:
        entry = {
            "action": "run_execution",
            "execution_step": e.step,
            "execution_id": e.execution_id,
        }
        ops.append(
            Op(INSERT_RESULT, (e.run_id, e.execution_id, e.action_index, at.offset, _json(entry)))
        )
    return ops


def _execution_started(e: ExecutionStarted, at: Position) -> list[Op]:
    return [
        Op(
            UPDATE_EXECUTION_STARTED,
            (e.runner_id, e.pid, ts(e.occurred_at), ts(e.lease_until), e.execution_id),
        )
    ]


def _heartbeat(e: ExecutionHeartbeat, at: Position) -> list[Op]:
    return [
        Op(
            UPDATE_EXECUTION_LEASE,
            (ts(e.lease_until), e.runner_id, e.execution_id),
        )
    ]


def _execution_finished(e: ExecutionFinished, at: Position) -> list[Op]:
    return [
        Op(
            UPDATE_EXECUTION_FINISHED,
            (
                e.status.value,
                e.exit_code,
                ts(e.started_at),
                ts(e.completed_at),
                e.duration_ms,
                None if e.output is None else _json(e.output),
                e.stdout_tail,
                e.stderr_tail,
                e.error,
                e.execution_id,
            ),
        )
    ]


def _pipeline_created(e: PipelineCreated, at: Position) -> list[Op]:
    if e.source_pipeline_id is None:
        entry = {
            "action": "run_pipeline",
            "pipeline_name": e.pipeline_name,
            "pipeline_id": e.pipeline_id,
        }
    else:
        entry = {
            "action": "copy_pipeline",
            "source_pipeline_id": e.source_pipeline_id,
            "pipeline_id": e.pipeline_id,
        }
    return [
        Op(
            "INSERT INTO pipelines (pipeline_id, run_id, name, action_index, source_pipeline_id,"
            " nodes, edges, status, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, 'RUNNING', ?)"
            " ON CONFLICT DO NOTHING",
            (
                e.pipeline_id,
                e.run_id,
                e.pipeline_name,
                e.action_index,
                e.source_pipeline_id,
                _json(e.nodes),
                _json(e.edges),
                ts(e.occurred_at),
            ),
        ),
        Op(INSERT_RESULT, (e.run_id, e.pipeline_id, e.action_index, at.offset, _json(entry))),
    ]


def _node_skipped(e: PipelineNodeSkipped, at: Position) -> list[Op]:
    return [Op(INSERT_SKIPPED, (e.pipeline_id, e.node, e.run_id, e.reason))]


def _pipeline_finished(e: PipelineFinished, at: Position) -> list[Op]:
    return [
        Op(
            "UPDATE pipelines SET status = ?, completed_at = ? WHERE pipeline_id = ?",
            (e.status.value, ts(e.occurred_at), e.pipeline_id),
        )
    ]


def _cancel_requested(e: RunCancelRequested, at: Position) -> list[Op]:
    return [
        Op(
            "UPDATE runs SET cancel_requested_at = COALESCE(cancel_requested_at, ?)"
            " WHERE run_id = ?",
            (ts(e.occurred_at), e.run_id),
        )
    ]


def _action_completed(e: ActionCompleted, at: Position) -> list[Op]:
    return [
        Op(
            UPSERT_ACTION,
            (
                e.run_id,
                e.action_index,
                e.action,
                e.status.value,
                None if e.result is None else _json(e.result),
                e.error,
                ts(e.occurred_at),
            ),
        ),
        _status(e.run_id),
    ]


def _run_finished(e: RunFinished, at: Position) -> list[Op]:
    return [
        Op(
            UPDATE_RUN_FINISHED,
            (
                e.status.value,
                ts(e.started_at),
                ts(e.completed_at),
                e.duration_ms,
                e.execution_count,
                None if e.error is None else e.error.message,
                e.failed_execution_id,
                e.run_id,
            ),
        ),
        _status(e.run_id),
    ]


def _delivery_state(e: DeliveryAttempted) -> str:
    if e.outcome == "failed":
        return "retrying" if e.next_attempt_at is not None else "failed"
    return e.outcome


def _attempted(e: DeliveryAttempted, at: Position) -> list[Op]:
    return [
        Op(
            INSERT_ATTEMPT,
            (
                e.run_id,
                e.message_id,
                e.subscription_id,
                e.attempt,
                e.outcome,
                e.status_code,
                e.duration_ms,
                e.response_excerpt,
                e.error,
                ts(e.occurred_at),
                ts(e.next_attempt_at),
            ),
        ),
        # Attempts can only arrive in order within a run's partition, so the latest one wins.
        Op(
            UPSERT_DELIVERY,
            (
                e.run_id,
                e.message_id,
                e.subscription_id,
                e.url,
                _delivery_state(e),
                e.attempt,
                e.status_code,
                ts(e.occurred_at),
                ts(e.next_attempt_at),
            ),
        ),
    ]


def _exhausted(e: DeliveryExhausted, at: Position) -> list[Op]:
    return [
        Op(
            UPDATE_DELIVERY_EXHAUSTED,
            (e.last_error, e.run_id, e.message_id, e.subscription_id),
        )
    ]


def _redelivery(e: RedeliveryRequested, at: Position) -> list[Op]:
    return [
        Op(
            "UPDATE runs SET redelivery_requested_at = ? WHERE run_id = ?",
            (ts(e.occurred_at), e.run_id),
        )
    ]


#: The row changes of each type (the rebuild's fast path in replay.py mirrors them).
HANDLERS: dict[type[Event], Any] = {
    TriggerLogged: _logged,
    TriggerLaunched: _launched,
    RunStarted: _started,
    ExecutionCreated: _execution_created,
    ExecutionStarted: _execution_started,
    ExecutionHeartbeat: _heartbeat,
    ExecutionFinished: _execution_finished,
    PipelineCreated: _pipeline_created,
    PipelineNodeSkipped: _node_skipped,
    PipelineFinished: _pipeline_finished,
    RunCancelRequested: _cancel_requested,
    ActionCompleted: _action_completed,
    RunFinished: _run_finished,
    DeliveryAttempted: _attempted,
    DeliveryExhausted: _exhausted,
    RedeliveryRequested: _redelivery,
}

EVENTS = EventMap("status", frozenset({topics.RUNS, topics.TRIGGERS}), HANDLERS)
