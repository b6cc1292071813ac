"""Topic names, what goes on each, and the settings each topic is created with."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

#: Every event of one run, keyed by run id: launches, actions, executions, deliveries, finish.
RUNS = "hookrun.runs"
#: Trigger log entries that belong to no run (rejected, duplicate, filtered and rate-limited launches), keyed by trigger id.
TRIGGERS = "hookrun.triggers"
#: Subscription state (disabled, enabled, health) and API-made definitions, keyed by
#: subscription id; compacted.
SUBSCRIPTIONS = "hookrun.subscriptions"
#: Inbound delivery ids already accepted, keyed by ``<trigger id>/<delivery id>``; compacted.
INBOUND_DELIVERIES = "hookrun.inbound-deliveries"
#: Pipeline definitions (for copy_pipeline across partitions), keyed by pipeline id; compacted.
PIPELINES = "hookrun.pipelines"
#: Each trigger schedule's firings, skips, pauses and resumes, keyed by trigger id; compacted.
SCHEDULES = "hookrun.schedules"
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
class Layout:
    """How hookrun's topics are laid out on the brokers (``HOOKRUN_TOPIC_*``)."""

    #: Copies of every partition; capped by the number of brokers when topics are created.
    replication_factor: int = 3
    #: Partitions of the keyed topics (runs, triggers, schedules, inbound deliveries).
    partitions: int = 6

    @property
    def min_insync(self) -> int:
        """``min.insync.replicas``: with three copies an acks=all append survives one broker
        lost and is refused rather than kept on one alone."""
        return 2 if self.replication_factor >= 3 else 1

    def on(self, brokers: int) -> Layout:
        """This layout on a cluster of ``brokers``: no more copies than brokers."""
        return replace(self, replication_factor=max(1, min(self.replication_factor, brokers)))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Layout:
        """Read ``HOOKRUN_TOPIC_REPLICATION_FACTOR`` and ``HOOKRUN_TOPIC_PARTITIONS``.

        Raises ValueError naming the variable when one is not a whole number of at least 1.
        """
        env = os.environ if environ is None else environ
        values = {}
        for name, var in (
            ("replication_factor", "HOOKRUN_TOPIC_REPLICATION_FACTOR"),
            ("partitions", "HOOKRUN_TOPIC_PARTITIONS"),
        ):
            raw = env.get(var, "").strip()
            if raw:
                if not raw.isdigit() or int(raw) < 1:
                    raise ValueError(f"{var}: must be a whole number of at least 1, not {raw!r}")
                values[name] = int(raw)
        return cls(**values)


@dataclass(frozen=True)
class TopicSpec:
    """A topic hookrun creates at start-up if it is missing."""

    name: str
    partitions: int
    configs: dict[str, str] = field(default_factory=dict)


def specs(
    partitions: int = 6, namespace: str = NAMESPACE, *, min_insync: int = 1
) -> list[TopicSpec]:
    """Return the topics hookrun needs, with ``partitions`` partitions for the keyed ones and
    ``min.insync.replicas`` set where ``min_insync`` is above the broker's default of 1."""
    insync = {"min.insync.replicas": str(min_insync)} if min_insync > 1 else {}
    return [
        TopicSpec(named(s.name, namespace), s.partitions, {**s.configs, **insync})
        for s in _specs(partitions)
    ]


def _specs(partitions: int) -> list[TopicSpec]:
    size = {"max.message.bytes": str(MAX_MESSAGE_BYTES)}
    # The run log is the source of truth a rebuild replays and a takeover resumes: kept for
    # ever, never the broker's 7 days. Dead letters are the evidence of what went wrong.
    forever = {"retention.ms": "-1", **size}
    return [
        TopicSpec(RUNS, partitions, forever),
        TopicSpec(dlq(RUNS), 1, forever),
        TopicSpec(TRIGGERS, partitions, {"retention.ms": str(TRIGGER_LOG_RETENTION_S * 1000)}),
        TopicSpec(dlq(TRIGGERS), 1, forever),
        TopicSpec(SUBSCRIPTIONS, 1, {"cleanup.policy": "compact"}),
        # One partition: the runner reads it whole, and a copy may name a pipeline of any run.
        TopicSpec(PIPELINES, 1, {"cleanup.policy": "compact", **size}),
        # One partition, read whole by every runner. Compacted and never deleted: a run is
        # performed with its launch's version however long ago that was loaded, and the topic
        # keeps one record per version, however often services restart with it.
        TopicSpec(CONFIGS, 1, {"cleanup.policy": "compact", "retention.ms": "-1", **size}),
        # Keyed, so the schedules spread over the runners; compacted, and never deleted: a
        # schedule's newest record says all there is to go on, however long ago it was written.
        TopicSpec(SCHEDULES, partitions, {"cleanup.policy": "compact", "retention.ms": "-1"}),
        TopicSpec(dlq(SCHEDULES), 1, forever),
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
