"""What ``hookrun.subscriptions`` says about each subscription: a pure fold of its events.

The notifier and the status service both follow the topic (a ``TopicTable``) into one of these.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from hookrun.events.base import Event
from hookrun.events.notifications import (
    SubscriptionDeleted,
    SubscriptionDisabled,
    SubscriptionEnabled,
    SubscriptionHealthChanged,
    SubscriptionSaved,
)

#: The types on hookrun.subscriptions that :class:`SubscriptionStates` folds.
SUBSCRIPTION_TYPES: tuple[type[Event], ...] = (
    SubscriptionDisabled,
    SubscriptionEnabled,
    SubscriptionHealthChanged,
    SubscriptionSaved,
    SubscriptionDeleted,
)


def subscription_id(trigger_id: str, url: str) -> str:
    """The id of a config-file subscription: ``<trigger id>:<12 hex of sha256(url)>``, stable
    while its URL is."""
    return f"{trigger_id}:{hashlib.sha256(url.encode()).hexdigest()[:12]}"


@dataclass
class SubscriptionStates:
    """The state of every subscription the topic mentions, newest record per key."""

    #: Subscription id -> the event that disabled it, while it is disabled.
    disabled: dict[str, SubscriptionDisabled] = field(default_factory=dict)
    #: Subscription id -> its newest health record, while it is failing.
    health: dict[str, SubscriptionHealthChanged] = field(default_factory=dict)
    #: Subscription id -> the definition of each subscription made through the admin API.
    defined: dict[str, SubscriptionSaved] = field(default_factory=dict)

    def apply(self, event: Event) -> None:
        """Fold one event of the topic in (idempotent: the newest record of a key wins)."""
        if isinstance(event, SubscriptionDisabled):
            self.disabled[event.subscription_id] = event
        elif isinstance(event, SubscriptionEnabled):
            self.disabled.pop(event.subscription_id, None)
            self.health.pop(event.subscription_id, None)
        elif isinstance(event, SubscriptionSaved):
            self.defined[event.subscription_id] = event
        elif isinstance(event, SubscriptionDeleted):
            self.defined.pop(event.subscription_id, None)
            self.disabled.pop(event.subscription_id, None)
            self.health.pop(event.subscription_id, None)
        elif isinstance(event, SubscriptionHealthChanged):
            if event.failing_since is None and not event.exhausted_in_row:
                self.health.pop(event.subscription_id, None)
            else:
                self.health[event.subscription_id] = event

    def disabled_under(
        self, subscription_id: str, config_version: str
    ) -> SubscriptionDisabled | None:
        """The event that disabled the subscription, if it still holds under ``config_version``:
        one disabled under an older config version is enabled again by the new version."""
        event = self.disabled.get(subscription_id)
        if event is None or event.config_version not in (None, config_version):
            return None
        return event
