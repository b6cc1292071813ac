"""The SQL the projection writes, and how one batch's row changes become ``executemany`` groups.

Statements use ``?`` placeholders and only SQL that SQLite and PostgreSQL both accept (upserts with
``ON CONFLICT``), so each store runs them as they are. Replaying an event is harmless: inserts
ignore conflicts and counters are recomputed from the rows, never incremented.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

Params = tuple[Any, ...]


# Op (like projection.Position and store.Applied) is a NamedTuple, not a frozen dataclass: a few
# are built per event, and a frozen dataclass costs several times a tuple to create.
class Op(NamedTuple):
    """One SQL statement and its parameters."""

    sql: str
    params: Params


Statement = tuple[str, list[Params]]

# Valohai's run-info vocabulary. A run is final once RunFinished arrived or every action it
# announced (RunStarted.action_count) completed. Actions of a finished, unsuccessful run that
# never completed (canceled, aborted) count as failed. One statement recomputes the counters from
# the action rows (never incremented) and the status from them: the aggregate without GROUP BY
# always yields one row, so a run without actions is updated too. Params: (run_id, run_id).
_STATUS_FROM_COUNTS = (
    "UPDATE runs SET actions_ok = c.ok, actions_failed = c.n - c.ok, info_status = CASE"
    " WHEN run_status IS NULL AND (action_count IS NULL OR c.n < action_count) THEN 'pending'"
    " WHEN c.ok = 0 AND (c.n > 0 OR run_status IS NULL OR run_status <> 'SUCCESS') THEN 'error'"
    " WHEN c.n = c.ok AND (run_status IS NULL OR run_status = 'SUCCESS') THEN 'completed'"
    " ELSE 'complete_with_error' END"
)
RECOMPUTE_STATUS = (
    _STATUS_FROM_COUNTS
    + " FROM (SELECT COUNT(CASE WHEN status = 'SUCCESS' THEN 1 END) AS ok, COUNT(*) AS n"
    " FROM actions WHERE run_id = ?) AS c"
    " WHERE runs.run_id = ?"
)
#: ``RECOMPUTE_STATUS`` of several runs in one statement (the rebuild's bulk form, see
#: ``sqlite.bulk_sql``, which repeats ``(?)`` once per run id). Runs without actions count zero.
RECOMPUTE_STATUS_BULK = (
    _STATUS_FROM_COUNTS
    + " FROM (SELECT v.column1 AS run, COUNT(CASE WHEN a.status = 'SUCCESS' THEN 1 END) AS ok,"
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
    " remote_addr, content_length, delivery_id, run_id, is_test, count)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"
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
    " delivery_id, account, part, replay_of, info_status, actions_ok, actions_failed)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending', 0, 0) ON CONFLICT DO NOTHING"
)
UPDATE_RUN_STARTED = (
    "UPDATE runs SET action_count = ?, runner_id = ?,"
    " started_at = COALESCE(started_at, ?) WHERE run_id = ?"
)
UPDATE_RUN_CANCEL_REQUESTED = (
    "UPDATE runs SET cancel_requested_at = COALESCE(cancel_requested_at, ?) WHERE run_id = ?"
)
UPDATE_RUN_REDELIVERY_REQUESTED = "UPDATE runs SET redelivery_requested_at = ? WHERE run_id = ?"
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
INSERT_PIPELINE = (
    "INSERT INTO pipelines (pipeline_id, run_id, name, action_index, source_pipeline_id,"
    " nodes, edges, status, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, 'RUNNING', ?)"
    " ON CONFLICT DO NOTHING"
)
UPDATE_PIPELINE_FINISHED = "UPDATE pipelines SET status = ?, completed_at = ? WHERE pipeline_id = ?"
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
UPSERT_DELIVERY_CANCELED = (
    "INSERT INTO deliveries (run_id, message_id, subscription_id, url, state, attempts,"
    " last_error) VALUES (?, ?, ?, ?, 'canceled', ?, ?)"
    " ON CONFLICT (run_id, message_id, subscription_id) DO UPDATE SET state = 'canceled',"
    " next_attempt_at = NULL, last_error = excluded.last_error"
)
#: Inserts that only add rows (ON CONFLICT DO NOTHING) to tables no other statement of the
#: projection reads or changes: within a transaction they can run in any order, after the rest.
APPEND_ONLY = frozenset({INSERT_EVENT, INSERT_LOG, INSERT_RESULT, INSERT_ATTEMPT, INSERT_SKIPPED})


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
