"""Pure rules: given an event and the settings last known, which suspension commands?

Command ids derive from the source event, the topic and the rule, so a replayed
or duplicated event yields the same command id and the state worker ignores it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from models import (
    Action,
    Cause,
    CrmOpportunityEvent,
    CrmStageSetting,
    CustomerSignup,
    PlanChange,
    PlanSetting,
    Reason,
    SignupSetting,
    SpaceSetting,
    SuspensionCommand,
)
from models.base import name_based_id
from models.events import CustomerEvent
from topics import CRM_OPPORTUNITIES, CUSTOMER_PLAN_CHANGES, CUSTOMER_SIGNUPS

COMMAND_ID_NAMESPACE = uuid.UUID("6f1c0f5e-7b7a-4c55-9d0e-5a1b2c3d4e5f")


@dataclass
class SettingsSnapshot:
    """Last known settings, keyed as their topics are."""

    signup: dict[str, SignupSetting] = field(default_factory=dict)  # by space_id
    plans: dict[str, PlanSetting] = field(default_factory=dict)  # by plan_id
    crm_stages: dict[str, CrmStageSetting] = field(default_factory=dict)  # by board_id/stage_id
    spaces: dict[str, SpaceSetting] = field(default_factory=dict)  # by space_id: time zones (validated here)

    def keeps_new_members_suspended(self, space_id: str) -> bool:
        setting = self.signup.get(space_id)
        return setting is not None and setting.keep_new_members_suspended

    def plan_suspends_on_join(self, space_id: str, plan_id: str | None) -> bool:
        setting = self.plans.get(plan_id) if plan_id else None
        # A plan of another space never applies: settings are per tenant.
        return setting is not None and setting.space_id == space_id and setting.suspend_on_join

    def stage_deactivates(self, space_id: str, board_id: str, stage_id: str) -> bool:
        setting = self.crm_stages.get(f"{board_id}/{stage_id}")
        return setting is not None and setting.space_id == space_id and setting.deactivate_account


def command_id_for(topic: str, event: CustomerEvent, reason: Reason, action: Action = Action.SUSPEND) -> str:
    rule = reason if action is Action.SUSPEND else f"{action}:{reason}"
    return name_based_id(COMMAND_ID_NAMESPACE, f"{topic}|{event.space_id}|{event.event_id}|{rule}")


def _command(topic: str, event: CustomerEvent, reason: Reason, action: Action = Action.SUSPEND) -> SuspensionCommand:
    return SuspensionCommand(
        command_id=command_id_for(topic, event, reason, action),
        issued_at=event.occurred_at,
        space_id=event.space_id,
        customer_id=event.customer_id,
        action=action,
        reason=reason,
        actor="system",
        cause=Cause(topic=topic, event_id=event.event_id),
    )


def _suspend(topic: str, event: CustomerEvent, reason: Reason) -> SuspensionCommand:
    return _command(topic, event, reason)


def commands_for_signup(event: CustomerSignup, settings: SettingsSnapshot) -> list[SuspensionCommand]:
    """Every signup gets a decision: the suspensions its rules call for, or else a `register` (the
    customer's first state, not suspended), so downstream can tell "not suspended" from "not decided"."""
    commands = []
    if settings.keeps_new_members_suspended(event.space_id):
        commands.append(_suspend(CUSTOMER_SIGNUPS.name, event, Reason.SIGNUP))
    if settings.plan_suspends_on_join(event.space_id, event.plan_id):
        commands.append(_suspend(CUSTOMER_SIGNUPS.name, event, Reason.PLAN))
    return commands or [_command(CUSTOMER_SIGNUPS.name, event, Reason.SIGNUP, Action.REGISTER)]


def commands_for_plan_change(event: PlanChange, settings: SettingsSnapshot) -> list[SuspensionCommand]:
    if settings.plan_suspends_on_join(event.space_id, event.plan_id):
        return [_suspend(CUSTOMER_PLAN_CHANGES.name, event, Reason.PLAN)]
    return []


def commands_for_opportunity(
    event: CrmOpportunityEvent, settings: SettingsSnapshot
) -> list[SuspensionCommand]:
    if settings.stage_deactivates(event.space_id, event.board_id, event.stage_id):
        return [_suspend(CRM_OPPORTUNITIES.name, event, Reason.CRM_STAGE)]
    return []
