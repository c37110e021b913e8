"""Inbound customer events published by upstream systems."""

from __future__ import annotations

from models.base import ContractModel, Id, Line, Timestamp


class CustomerEvent(ContractModel):
    event_id: Id
    occurred_at: Timestamp
    space_id: Id
    customer_id: Id


class CustomerSignup(CustomerEvent):
    email: Line | None = None
    plan_id: Id | None = None


class PlanChange(CustomerEvent):
    plan_id: Id
    previous_plan_id: Id | None = None


class CrmOpportunityEvent(CustomerEvent):
    opportunity_id: Id
    board_id: Id
    stage_id: Id
