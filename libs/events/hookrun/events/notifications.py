"""Events about completion webhooks (RunNotification deliveries). Key: the run id."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict

from hookrun.events import topics
from hookrun.events.base import Event
from hookrun.events.limits import BoundedText, OptionalBoundedText
from hookrun.events.registry import register


@register(
    "hookrun.delivery.attempted",
    version=1,
    topic=topics.RUNS,
    producers=("notifier",),
    consumers=("notifier", "status"),
)
class DeliveryAttempted(Event):
    """One HTTP attempt to deliver a run's RunNotification to one subscription."""

    run_id: str
    #: The Standard Webhooks ``webhook-id``: the same for every attempt of this delivery.
    message_id: str
    subscription_id: str
    url: str
    attempt: int
    outcome: Literal["succeeded", "failed", "refused", "gone"]
    status_code: int | None = None
    duration_ms: int | None = None
    response_excerpt: BoundedText = ""
    error: OptionalBoundedText = None
    #: When the next attempt is due; None when no attempt follows this one.
    next_attempt_at: datetime | None = None


@register(
    "hookrun.delivery.exhausted",
    version=1,
    topic=topics.RUNS,
    producers=("notifier",),
    consumers=("notifier", "status"),
)
class DeliveryExhausted(Event):
    """Every attempt of the retry schedule failed; the delivery is given up (and visible)."""

    run_id: str
    message_id: str
    subscription_id: str
    attempts: int
    last_error: OptionalBoundedText = None


@register(
    "hookrun.delivery.canceled",
    version=1,
    topic=topics.RUNS,
    producers=("notifier",),
    consumers=("notifier", "status"),
)
class DeliveryCanceled(Event):
    """A delivery is given up without another attempt: the subscription was changed so that its
    ``statuses`` no longer include the run's status (``filtered``), deleted (``deleted``) or
    disabled (``disabled``) while the delivery waited. No request was made for this event."""

    run_id: str
    message_id: str
    subscription_id: str
    #: The subscription's URL when the delivery was given up (for a delivery never attempted).
    url: str
    #: Attempts made before it was canceled (0: none).
    attempts: int
    cause: Literal["filtered", "deleted", "disabled"]
    reason: BoundedText


@register(
    "hookrun.delivery.redelivery_requested",
    version=1,
    topic=topics.RUNS,
    producers=("status",),
    consumers=("notifier", "status"),
)
class RedeliveryRequested(Event):
    """Someone asked to send a run's notification again (admin API), to one or all subscriptions."""

    run_id: str
    subscription_id: str | None = None
    requested_by: str = "admin"


@register(
    "hookrun.subscription.disabled",
    version=1,
    topic=topics.SUBSCRIPTIONS,
    producers=("notifier",),
    consumers=("notifier", "status"),
)
class SubscriptionDisabled(Event):
    """No more deliveries go to the subscription until it is enabled again (admin API) or the
    config changes: its subscriber answered 410 Gone (``gone``), or every delivery failed for
    ``notifier.disable_after_s`` or that many deliveries in a row were exhausted (``failing``)."""

    key_field = "subscription_id"

    subscription_id: str
    trigger_id: str
    url: str
    reason: BoundedText
    #: The config version the subscription was disabled under; a new config version re-enables it.
    config_version: str | None = None
    cause: Literal["gone", "failing"] = "gone"


@register(
    "hookrun.subscription.enabled",
    version=1,
    topic=topics.SUBSCRIPTIONS,
    producers=("status",),
    consumers=("notifier", "status"),
)
class SubscriptionEnabled(Event):
    """Someone enabled a disabled subscription again (admin API); its health starts afresh."""

    key_field = "subscription_id"

    subscription_id: str
    trigger_id: str
    requested_by: str = "admin"


@register(
    "hookrun.subscription.health_changed",
    version=1,
    topic=topics.SUBSCRIPTIONS,
    producers=("notifier",),
    consumers=("notifier", "status"),
)
class SubscriptionHealthChanged(Event):
    """A subscription started failing, failed a whole delivery again, or recovered.

    Key: ``<subscription id>/health``, so that compaction keeps it beside (not instead of) the
    subscription's newest disabled or enabled record.
    """

    key_field = "subscription_id"

    subscription_id: str
    trigger_id: str
    #: When the first of the failed attempts since the last success was made; None: healthy.
    failing_since: datetime | None = None
    #: Deliveries exhausted in a row since the last success.
    exhausted_in_row: int = 0

    @property
    def key(self) -> str:
        """``<subscription id>/health``."""
        return f"{self.subscription_id}/health"


class SubscriptionSecret(BaseModel):
    """One signing secret of a subscription made through the admin API."""

    model_config = ConfigDict(frozen=True)

    #: ``whsec_...`` (v1) or ``whsk_...`` (v1a), as given out once at creation or rotation, or
    #: ``sealed:<Fernet token>`` of it when HOOKRUN_SECRETS_KEY is set (docs/security.md).
    secret: str
    #: When a rotated-out secret stops signing; None: it signs until rotated out.
    expires_at: datetime | None = None


@register(
    "hookrun.subscription.saved",
    version=1,
    topic=topics.SUBSCRIPTIONS,
    producers=("status",),
    consumers=("notifier", "status"),
)
class SubscriptionSaved(Event):
    """A subscription made (or changed, or its secret rotated) through the admin API: its whole
    definition, so that compaction may keep only the newest.

    Key: ``<subscription id>/definition``, beside the subscription's state records.
    """

    key_field = "subscription_id"

    subscription_id: str
    trigger_id: str
    url: str
    secrets: list[SubscriptionSecret]
    #: ``v1`` (the secrets are ``whsec_``) or ``v1a`` (``whsk_``).
    signature: Literal["v1", "v1a"] = "v1"
    statuses: list[str] | None = None
    #: Values may be ``${env:NAME}``, read from the notifier's environment when it sends.
    headers: dict[str, str] = {}
    created_at: datetime | None = None

    @property
    def key(self) -> str:
        """``<subscription id>/definition``."""
        return f"{self.subscription_id}/definition"


@register(
    "hookrun.subscription.deleted",
    version=1,
    topic=topics.SUBSCRIPTIONS,
    producers=("status",),
    consumers=("notifier", "status"),
)
class SubscriptionDeleted(Event):
    """A subscription made through the admin API was removed; nothing more is delivered to it.

    Key: ``<subscription id>/definition``, so it replaces the subscription's definition.
    """

    key_field = "subscription_id"

    subscription_id: str
    trigger_id: str

    @property
    def key(self) -> str:
        """``<subscription id>/definition``."""
        return f"{self.subscription_id}/definition"
