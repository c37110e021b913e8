"""Suspension commands: the only way state changes."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import StringConstraints, model_validator

from models.base import ACTOR_PATTERN, ContractModel, Id, Text, Timestamp


class Action(StrEnum):
    SUSPEND = "suspend"
    LIFT = "lift"
    # (addition) The decision for a signup that suspends nothing: the customer's first state, not
    # suspended. A no-op for a customer the service knows already.
    REGISTER = "register"
    # (addition) Cancel a pending scheduled suspension or lift, named by `schedule_id`.
    CANCEL_SCHEDULE = "cancel_schedule"
    # (addition) Remove one reason: the customer stays suspended while other reasons remain, and is
    # lifted (as a lift would) when none does.
    RELEASE = "release"


class Reason(StrEnum):
    SIGNUP = "signup"
    PLAN = "plan"
    CRM_STAGE = "crm_stage"
    MANUAL = "manual"
    OVERDUE = "overdue"  # (addition) an invoice unpaid too long, where the space's rule is on


class MissedInvoices(StrEnum):
    BILL = "bill"
    WAIVE = "waive"


class Source(StrEnum):
    """What issued a command (addition): carried into the lifecycle events."""

    SIGNUP_RULE = "signup_rule"
    PLAN_RULE = "plan_rule"
    CRM_STAGE_RULE = "crm_stage_rule"
    OPERATOR_CLI = "operator_cli"
    OPERATOR_API = "operator_api"
    BULK = "bulk"
    SCHEDULE = "schedule"
    OVERDUE_RULE = "overdue_rule"


# The source a command has when it names none: its rule, or the operators' CLI for a manual one.
SOURCE_OF_REASON = {
    "signup": Source.SIGNUP_RULE, "plan": Source.PLAN_RULE, "crm_stage": Source.CRM_STAGE_RULE,
    "manual": Source.OPERATOR_CLI, "overdue": Source.OVERDUE_RULE,
}

Actor = Annotated[str, StringConstraints(pattern=ACTOR_PATTERN)]


class Cause(ContractModel):
    topic: Id
    event_id: Id
    invoice_id: Id | None = None  # (addition) on the overdue rule's commands: the invoice


class SuspensionCommand(ContractModel):
    command_id: Id
    issued_at: Timestamp
    space_id: Id
    customer_id: Id
    action: Action
    reason: Reason
    actor: Actor
    note: Text | None = None
    cause: Cause | None = None
    missed_invoices: MissedInvoices | None = None
    source: Source | None = None  # (addition) optional; derived from the reason when absent
    # (additions) Scheduling: `at` schedules the suspend or lift for that moment instead of now;
    # `until` on a suspend schedules its lift; `schedule_id` names the schedule a `cancel_schedule`
    # cancels, or the schedule a command fired by the service carries out.
    at: Timestamp | None = None
    until: Timestamp | None = None
    schedule_id: Id | None = None

    @model_validator(mode="after")
    def _fields_fit_the_action(self) -> SuspensionCommand:
        if self.missed_invoices is not None and self.action not in (Action.LIFT, Action.RELEASE):
            raise ValueError("missed_invoices is only allowed on a lift or a release")
        if self.until is not None and self.action is not Action.SUSPEND:
            raise ValueError("until is only allowed on a suspend")
        if self.at is not None and self.action not in (Action.SUSPEND, Action.LIFT):
            raise ValueError("at is only allowed on a suspend or a lift")
        if self.until is not None and self.at is not None and self.until <= self.at:
            raise ValueError("until must be after at")
        if self.action is Action.CANCEL_SCHEDULE and self.schedule_id is None:
            raise ValueError("a cancel_schedule names its schedule_id")
        return self

    @property
    def missed_invoices_or_default(self) -> MissedInvoices:
        return self.missed_invoices or MissedInvoices.BILL

    @property
    def source_or_default(self) -> Source:
        return self.source or SOURCE_OF_REASON[self.reason]
