"""Suspension commands: the only way state changes."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import StringConstraints, model_validator

from models.base import ContractModel, Id, Text, Timestamp


class Action(StrEnum):
    SUSPEND = "suspend"
    LIFT = "lift"


class Reason(StrEnum):
    SIGNUP = "signup"
    PLAN = "plan"
    CRM_STAGE = "crm_stage"
    MANUAL = "manual"


class MissedInvoices(StrEnum):
    BILL = "bill"
    WAIVE = "waive"


Actor = Annotated[str, StringConstraints(pattern=r"^(system|admin:[^\s]{1,100})$")]


class Cause(ContractModel):
    topic: Id
    event_id: Id


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

    @model_validator(mode="after")
    def _missed_invoices_only_on_lift(self) -> SuspensionCommand:
        if self.missed_invoices is not None and self.action is not Action.LIFT:
            raise ValueError("missed_invoices is only allowed on a lift")
        return self

    @property
    def missed_invoices_or_default(self) -> MissedInvoices:
        return self.missed_invoices or MissedInvoices.BILL
