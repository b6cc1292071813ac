"""Topic names, what goes on each, and the settings each topic is created with."""

from __future__ import annotations

from dataclasses import dataclass, field

#: Every event of one run, keyed by run id: launches, actions, executions, deliveries, finish.
RUNS = "hookrun.runs"
#: Trigger log entries that belong to no run (rejected and duplicate launches), keyed by trigger id.
TRIGGERS = "hookrun.triggers"
#: Subscriptions disabled by a 410 answer, keyed by subscription id; compacted.
SUBSCRIPTIONS = "hookrun.subscriptions"
#: Inbound delivery ids already accepted, keyed by ``<trigger id>/<delivery id>``; compacted.
INBOUND_DELIVERIES = "hookrun.inbound-deliveries"
#: Pipeline definitions (for copy_pipeline across partitions), keyed by pipeline id; compacted.
PIPELINES = "hookrun.pipelines"
#: Every config version a service loaded, as its file was written, keyed by version; compacted.
CONFIGS = "hookrun.configs"


#: The default namespace: the first segment of every topic name.
NAMESPACE = "hookrun"


def named(topic: str, namespace: str = NAMESPACE) -> str:
    """Return ``topic`` in ``namespace``: ``named("hookrun.runs", "t1")`` is ``"t1.runs"``.

    Namespaces let several hookrun systems (or test modules) share one broker.
    """
    if namespace == NAMESPACE:
        return topic
    return namespace + topic[len(NAMESPACE) :]


def dlq(topic: str) -> str:
    """Return the dead-letter topic of ``topic`` (``<topic>.dlq``)."""
    return f"{topic}.dlq"


#: Largest Kafka message hookrun writes. TriggerLaunched carries the raw body (base64, so 4/3 of
#: HOOKRUN_MAX_BODY_BYTES) plus headers; 8 MiB leaves room for a body limit of up to ~5 MiB.
MAX_MESSAGE_BYTES = 8 * 1024 * 1024

#: How long an inbound delivery id is remembered for redelivery dedupe: 6 h.
DEDUPE_WINDOW_S = 6 * 3600

#: How long the trigger log keeps the entries that started no run, on ``hookrun.triggers`` and
#: in the status store (HOOKRUN_TRIGGER_LOG_RETENTION_S): anyone can send a rejected request.
TRIGGER_LOG_RETENTION_S = 30 * 86400


@dataclass(frozen=True)
class TopicSpec:
    """A topic hookrun creates at start-up if it is missing."""

    name: str
    partitions: int
    configs: dict[str, str] = field(default_factory=dict)


def specs(partitions: int = 6, namespace: str = NAMESPACE) -> list[TopicSpec]:
    """Return the topics hookrun needs, with ``partitions`` partitions for the keyed ones."""
    return [
        TopicSpec(named(s.name, namespace), s.partitions, s.configs) for s in _specs(partitions)
    ]


def _specs(partitions: int) -> list[TopicSpec]:
    size = {"max.message.bytes": str(MAX_MESSAGE_BYTES)}
    return [
        TopicSpec(RUNS, partitions, size),
        TopicSpec(dlq(RUNS), 1, size),
        TopicSpec(TRIGGERS, partitions, {"retention.ms": str(TRIGGER_LOG_RETENTION_S * 1000)}),
        TopicSpec(dlq(TRIGGERS), 1, size),
        TopicSpec(SUBSCRIPTIONS, 1, {"cleanup.policy": "compact"}),
        # One partition: the runner reads it whole, and a copy may name a pipeline of any run.
        TopicSpec(PIPELINES, 1, {"cleanup.policy": "compact", **size}),
        # One partition, read whole by every runner. Compacted and never deleted: a run is
        # performed with its launch's version however long ago that was loaded, and the topic
        # keeps one record per version, however often services restart with it.
        TopicSpec(CONFIGS, 1, {"cleanup.policy": "compact", "retention.ms": "-1", **size}),
        TopicSpec(
            INBOUND_DELIVERIES,
            partitions,
            {
                # Compaction keeps the newest record per delivery id; deletion forgets ids after
                # the window, so a gateway's start-up replay stays small.
                "cleanup.policy": "compact,delete",
                "retention.ms": str((DEDUPE_WINDOW_S + 3600) * 1000),
                "segment.ms": str(3600 * 1000),
            },
        ),
    ]
