"""The projection's row rules: for each event type, the statements and parameters its data makes.

A rule takes the event's data as the JSON of its record holds it (a dict of JSON values, times as
the store's UTC text) and its envelope, and returns the ops. The live projection calls it with
the data of the decoded event (``projection.EventData``); the rebuild with the record's JSON as
it is (``replay``), skipping the event model. A rule reads every value it stores through a
reader of ``values``, which raises ``NotCanonical`` for a value the event model would have
coerced, refused or cut: the live data never holds one, and the rebuild then decodes the record
and folds that instead, so both store the same rows.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from hookrun.events import (
    ActionCompleted,
    DeliveryAttempted,
    DeliveryCanceled,
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
from hookrun.status.statements import (
    INSERT_ATTEMPT,
    INSERT_EVENT,
    INSERT_EXECUTION,
    INSERT_LOG,
    INSERT_PIPELINE,
    INSERT_RESULT,
    INSERT_RUN,
    INSERT_SKIPPED,
    RECOMPUTE_STATUS,
    UPDATE_DELIVERY_EXHAUSTED,
    UPDATE_EXECUTION_FINISHED,
    UPDATE_EXECUTION_LEASE,
    UPDATE_EXECUTION_STARTED,
    UPDATE_PIPELINE_FINISHED,
    UPDATE_RUN_CANCEL_REQUESTED,
    UPDATE_RUN_FINISHED,
    UPDATE_RUN_REDELIVERY_REQUESTED,
    UPDATE_RUN_STARTED,
    UPSERT_ACTION,
    UPSERT_DELIVERY,
    UPSERT_DELIVERY_CANCELED,
    Op,
)
from hookrun.status.store import Applied
from hookrun.status.values import (
    STATUSES,
    NotCanonical,
    boolean,
    bounded,
    integer,
    json_object,
    literal,
    opt_bounded,
    opt_integer,
    opt_stored_ts,
    opt_string,
    stored_ts,
    string,
)

Data = dict[str, Any]
#: A row rule: (data, partition, offset, event id, occurred_at as stored) -> ops.
Rule = Callable[[Data, int, int, str, str], list[Op]]


def apply_rule(
    type_: str,
    data: Data,
    topic: str,
    partition: int,
    offset: int,
    event_id: str,
    occurred: str,
    cloudevent: str,
) -> Applied:
    """The record of an event of a handled type with its rule's ops; an event of a run is kept raw.

    ``occurred`` is the event's time as ``projection.ts`` text; ``cloudevent`` the record (see
    ``projection.Position``). Raises ``NotCanonical``, ``LookupError`` or ``TypeError`` for data
    not in the form the event model gives.
    """
    rule, of_a_run = RULES[type_]
    if not of_a_run:
        ops = rule(data, partition, offset, event_id, occurred)
        return Applied(topic, partition, offset, ops, opt_string(data.get("run_id")))
    run_id = string(data["run_id"])
    ops = [
        Op(INSERT_EVENT, (topic, partition, offset, run_id, type_, occurred, event_id, cloudevent))
    ]
    ops += rule(data, partition, offset, event_id, occurred)
    return Applied(topic, partition, offset, ops, run_id)


_ACTIONS = frozenset({"run_execution", "run_pipeline", "copy_pipeline"})
_OUTCOMES = frozenset({"succeeded", "failed", "refused", "gone"})
_LOGGED = frozenset({"rejected", "duplicate", "filtered", "rate_limited"})


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


def _recompute(run_id: str) -> Op:
    return Op(RECOMPUTE_STATUS, (run_id, run_id))


def _result(run_id: str, object_id: str, action_index: int, off: int, entry: Data) -> Op:
    """The run-info result entry of an execution or pipeline, in log order."""
    return Op(INSERT_RESULT, (run_id, object_id, action_index, off, _json(entry)))


def _log_entry(d: Data, part: int, off: int, event_id: str, occurred: str) -> list[Op]:
    params = (
        event_id,
        string(d["trigger_id"]),
        occurred,
        literal(d["outcome"], _LOGGED),
        bounded(d["reason"]),
        integer(d["status_code"]),
        string(d["method"]),
        opt_string(d.get("remote_addr")),
        integer(d.get("content_length", 0)),
        opt_string(d.get("delivery_id")),
        opt_string(d.get("run_id")),
        0,
        integer(d.get("count", 1)),
    )
    return [Op(INSERT_LOG, params)]


def _open_run(d: Data, part: int, off: int, event_id: str, occurred: str) -> list[Op]:
    run_id, trigger_id = d["run_id"], string(d["trigger_id"])
    delivery_id = opt_string(d.get("delivery_id"))
    is_test = boolean(d.get("is_test", False))
    replay_of = opt_string(d.get("replay_of"))
    request = json_object(d["request"])
    body_b64 = string(request.get("body_b64", ""))
    return [
        Op(
            INSERT_RUN,
            (
                run_id,
                trigger_id,
                string(d["config_version"]),
                occurred,
                int(is_test),
                delivery_id,
                opt_string(d.get("account")),
                part,
                replay_of,
            ),
        ),
        Op(
            INSERT_LOG,
            (
                event_id,
                trigger_id,
                occurred,
                "accepted",
                _accepted_reason(is_test, replay_of),
                202,
                string(request["method"]),
                opt_string(request.get("remote_addr")),
                len(body_b64) * 3 // 4 - body_b64[-2:].count("="),
                delivery_id,
                run_id,
                int(is_test),
                1,
            ),
        ),
    ]


def _accepted_reason(is_test: bool, replay_of: str | None) -> str:
    """Why a launch was accepted, as the trigger log shows it: a test launch and a replay come
    from the admin API, which checks none of the trigger's conditions."""
    if is_test:
        return "test launch (conditions skipped)"
    if replay_of:
        return f"replay of {replay_of} (conditions skipped)"
    return "all conditions passed"


def _start_run(d: Data, part: int, off: int, event_id: str, occurred: str) -> list[Op]:
    run_id = d["run_id"]
    return [
        Op(
            UPDATE_RUN_STARTED,
            (integer(d["action_count"]), string(d["runner_id"]), occurred, run_id),
        ),
        _recompute(run_id),
    ]


def _add_execution(d: Data, part: int, off: int, event_id: str, occurred: str) -> list[Op]:
    run_id, execution_id, step = d["run_id"], string(d["execution_id"]), string(d["step"])
    action_index = integer(d["action_index"])
    pipeline_id = opt_string(d.get("pipeline_id"))
    params = json_object(d.get("params", {}))
    ops = [
        Op(
            INSERT_EXECUTION,
            (
                execution_id,
                run_id,
                action_index,
                step,
                pipeline_id,
                opt_string(d.get("node")),
                integer(d.get("attempt", 1)),
                _json(params),
                occurred,
            ),
        )
    ]
    if pipeline_id is None:
        entry = {"action": "run_execution", "execution_step": step, "execution_id": execution_id}
        ops.append(_result(run_id, execution_id, action_index, off, entry))
    return ops


def _start_execution(d: Data, part: int, off: int, event_id: str, occurred: str) -> list[Op]:
    params = (
        string(d["runner_id"]),
        opt_integer(d.get("pid")),
        occurred,
        stored_ts(d["lease_until"]),
        string(d["execution_id"]),
    )
    return [Op(UPDATE_EXECUTION_STARTED, params)]


def _extend_lease(d: Data, part: int, off: int, event_id: str, occurred: str) -> list[Op]:
    params = (stored_ts(d["lease_until"]), string(d["runner_id"]), string(d["execution_id"]))
    return [Op(UPDATE_EXECUTION_LEASE, params)]


def _finish_execution(d: Data, part: int, off: int, event_id: str, occurred: str) -> list[Op]:
    output = d.get("output")
    return [
        Op(
            UPDATE_EXECUTION_FINISHED,
            (
                literal(d["status"], STATUSES),
                opt_integer(d.get("exit_code")),
                opt_stored_ts(d.get("started_at")),
                stored_ts(d["completed_at"]),
                opt_integer(d.get("duration_ms")),
                None if output is None else _json(output),
                bounded(d.get("stdout_tail", "")),
                bounded(d.get("stderr_tail", "")),
                opt_bounded(d.get("error")),
                string(d["execution_id"]),
            ),
        )
    ]


def _add_pipeline(d: Data, part: int, off: int, event_id: str, occurred: str) -> list[Op]:
    run_id, pipeline_id, name = d["run_id"], string(d["pipeline_id"]), string(d["pipeline_name"])
    action_index, source = integer(d["action_index"]), opt_string(d.get("source_pipeline_id"))
    nodes, edges = json_object(d["nodes"]), d.get("edges", [])
    if any(type(step) is not str for step in nodes.values()) or type(edges) is not list:
        raise NotCanonical
    for edge in edges:
        if type(edge) is not list or len(edge) != 2 or not all(type(n) is str for n in edge):
            raise NotCanonical
    if source is None:
        entry = {"action": "run_pipeline", "pipeline_name": name, "pipeline_id": pipeline_id}
    else:
        entry = {
            "action": "copy_pipeline",
            "source_pipeline_id": source,
            "pipeline_id": pipeline_id,
        }
    return [
        Op(
            INSERT_PIPELINE,
            (
                pipeline_id,
                run_id,
                name,
                action_index,
                source,
                _json(nodes),
                _json(edges),
                occurred,
            ),
        ),
        _result(run_id, pipeline_id, action_index, off, entry),
    ]


def _skip_node(d: Data, part: int, off: int, event_id: str, occurred: str) -> list[Op]:
    params = (string(d["pipeline_id"]), string(d["node"]), d["run_id"], bounded(d["reason"]))
    return [Op(INSERT_SKIPPED, params)]


def _finish_pipeline(d: Data, part: int, off: int, event_id: str, occurred: str) -> list[Op]:
    params = (literal(d["status"], STATUSES), occurred, string(d["pipeline_id"]))
    return [Op(UPDATE_PIPELINE_FINISHED, params)]


def _request_cancel(d: Data, part: int, off: int, event_id: str, occurred: str) -> list[Op]:
    return [Op(UPDATE_RUN_CANCEL_REQUESTED, (occurred, d["run_id"]))]


def _complete_action(d: Data, part: int, off: int, event_id: str, occurred: str) -> list[Op]:
    run_id, result = d["run_id"], d.get("result")
    action = literal(d["action"], _ACTIONS)
    return [
        Op(
            UPSERT_ACTION,
            (
                run_id,
                integer(d["action_index"]),
                action,
                literal(d["status"], STATUSES),
                None if result is None else _json(json_object(result)),
                opt_bounded(d.get("error")),
                occurred,
            ),
        ),
        _recompute(run_id),
    ]


def _finish_run(d: Data, part: int, off: int, event_id: str, occurred: str) -> list[Op]:
    run_id, error = d["run_id"], d.get("error")
    message = None if error is None else bounded(json_object(error)["message"])
    return [
        Op(
            UPDATE_RUN_FINISHED,
            (
                literal(d["status"], STATUSES),
                stored_ts(d["started_at"]),
                stored_ts(d["completed_at"]),
                integer(d["duration_ms"]),
                integer(d["execution_count"]),
                message,
                opt_string(d.get("failed_execution_id")),
                run_id,
            ),
        ),
        _recompute(run_id),
    ]


def _record_attempt(d: Data, part: int, off: int, event_id: str, occurred: str) -> list[Op]:
    run_id, outcome = d["run_id"], literal(d["outcome"], _OUTCOMES)
    message_id, subscription_id = string(d["message_id"]), string(d["subscription_id"])
    attempt, status_code = integer(d["attempt"]), opt_integer(d.get("status_code"))
    next_at = opt_stored_ts(d.get("next_attempt_at"))
    if outcome == "failed":
        state = "retrying" if next_at is not None else "failed"
    else:
        state = outcome
    return [
        Op(
            INSERT_ATTEMPT,
            (
                run_id,
                message_id,
                subscription_id,
                attempt,
                outcome,
                status_code,
                opt_integer(d.get("duration_ms")),
                bounded(d.get("response_excerpt", "")),
                opt_bounded(d.get("error")),
                occurred,
                next_at,
            ),
        ),
        # Attempts can only arrive in order within a run's partition, so the latest one wins.
        Op(
            UPSERT_DELIVERY,
            (
                run_id,
                message_id,
                subscription_id,
                string(d["url"]),
                state,
                attempt,
                status_code,
                occurred,
                next_at,
            ),
        ),
    ]


def _exhaust_delivery(d: Data, part: int, off: int, event_id: str, occurred: str) -> list[Op]:
    params = (
        opt_bounded(d.get("last_error")),
        d["run_id"],
        string(d["message_id"]),
        string(d["subscription_id"]),
    )
    return [Op(UPDATE_DELIVERY_EXHAUSTED, params)]


def _cancel_delivery(d: Data, part: int, off: int, event_id: str, occurred: str) -> list[Op]:
    # An upsert: a delivery canceled before its first attempt has no row yet.
    params = (
        d["run_id"],
        string(d["message_id"]),
        string(d["subscription_id"]),
        string(d["url"]),
        integer(d["attempts"]),
        bounded(d["reason"]),
    )
    return [Op(UPSERT_DELIVERY_CANCELED, params)]


def _request_redelivery(d: Data, part: int, off: int, event_id: str, occurred: str) -> list[Op]:
    return [Op(UPDATE_RUN_REDELIVERY_REQUESTED, (occurred, d["run_id"]))]


#: The row rule of each type the projection handles.
HANDLERS: dict[type[Event], Rule] = {
    TriggerLogged: _log_entry,
    TriggerLaunched: _open_run,
    RunStarted: _start_run,
    ExecutionCreated: _add_execution,
    ExecutionStarted: _start_execution,
    ExecutionHeartbeat: _extend_lease,
    ExecutionFinished: _finish_execution,
    PipelineCreated: _add_pipeline,
    PipelineNodeSkipped: _skip_node,
    PipelineFinished: _finish_pipeline,
    RunCancelRequested: _request_cancel,
    ActionCompleted: _complete_action,
    RunFinished: _finish_run,
    DeliveryAttempted: _record_attempt,
    DeliveryExhausted: _exhaust_delivery,
    DeliveryCanceled: _cancel_delivery,
    RedeliveryRequested: _request_redelivery,
}

#: By wire type: the rule, and whether the event belongs to a run (and is kept raw).
RULES: dict[str, tuple[Rule, bool]] = {
    cls.type: (rule, cls.topic == topics.RUNS) for cls, rule in HANDLERS.items()
}
