"""Frozen pydantic models of the hookrun config file, with load-time cross-checks."""

from hookrun.config.model.base import decode_whsec
from hookrun.config.model.conditions import (
    CONDITION_TYPES,
    PRESETS,
    Condition,
    HmacCondition,
    IpAllowCondition,
    SlackCondition,
    StandardWebhooksCondition,
    StaticSecretCondition,
    StripeCondition,
)
from hookrun.config.model.config import (
    Environment,
    HookrunConfig,
    NotifierConfig,
    Organization,
    Project,
)
from hookrun.config.model.steps import Edge, Input, Node, Parameter, Pipeline, Step
from hookrun.config.model.triggers import (
    ACTION_TYPES,
    Action,
    CopyPipelineAction,
    Dedupe,
    Notification,
    RateLimit,
    Response,
    RunExecutionAction,
    RunPipelineAction,
    Trigger,
)

__all__ = [
    "ACTION_TYPES",
    "CONDITION_TYPES",
    "PRESETS",
    "Action",
    "Condition",
    "CopyPipelineAction",
    "Dedupe",
    "Edge",
    "Environment",
    "HmacCondition",
    "HookrunConfig",
    "Input",
    "IpAllowCondition",
    "Node",
    "Notification",
    "NotifierConfig",
    "Organization",
    "Parameter",
    "Pipeline",
    "Project",
    "RateLimit",
    "Response",
    "RunExecutionAction",
    "RunPipelineAction",
    "SlackCondition",
    "StandardWebhooksCondition",
    "StaticSecretCondition",
    "Step",
    "StripeCondition",
    "Trigger",
    "decode_whsec",
]
