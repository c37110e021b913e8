"""Inbound customer events published by upstream systems."""

from __future__ import annotations

from typing import Annotated

from pydantic import StringConstraints

from models.base import SINGLE_LINE_PATTERN, ContractModel, Id, Line, Timestamp

DISPLAY_NAME_MAX_LENGTH = 200
# A person's name as upstream knows it: one line, at most 200 characters (personal data: docs/contract.md).
DisplayName = Annotated[str, StringConstraints(max_length=DISPLAY_NAME_MAX_LENGTH, pattern=SINGLE_LINE_PATTERN)]


class CustomerEvent(ContractModel):
    event_id: Id
    occurred_at: Timestamp
    space_id: Id
    customer_id: Id


class CustomerSignup(CustomerEvent):
    email: Line | None = None
    plan_id: Id | None = None
    display_name: DisplayName | None = None


class CustomerProfile(ContractModel):
    """Who a customer is, as upstream knows it now (``customer.profile``): the whole profile, last write wins
    by ``updated_at``; a field left out or null is not known (any earlier value is dropped)."""

    space_id: Id
    customer_id: Id
    display_name: DisplayName | None = None
    email: Line | None = None
    updated_at: Timestamp


class PlanChange(CustomerEvent):
    plan_id: Id
    previous_plan_id: Id | None = None


class CrmOpportunityEvent(CustomerEvent):
    opportunity_id: Id
    board_id: Id
    stage_id: Id
