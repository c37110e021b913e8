"""Contract records for tests, as upstream systems would publish them."""

from __future__ import annotations

import uuid
from typing import Any

from tests.support import now_iso


def signup_setting(space: str, on: bool) -> dict[str, Any]:
    return {"space_id": space, "keep_new_members_suspended": on, "updated_at": now_iso()}


def plan_setting(space: str, plan: str, on: bool) -> dict[str, Any]:
    return {"space_id": space, "plan_id": plan, "suspend_on_join": on, "updated_at": now_iso()}


def stage_setting(space: str, board: str, stage: str, on: bool) -> dict[str, Any]:
    return {"space_id": space, "board_id": board, "stage_id": stage, "deactivate_account": on,
            "updated_at": now_iso()}


def signup(customer: str, space: str, plan: str | None = None, event_id: str | None = None) -> dict[str, Any]:
    record: dict[str, Any] = {"event_id": event_id or uuid.uuid4().hex, "occurred_at": now_iso(),
                              "space_id": space, "customer_id": customer, "email": f"{customer}@example.com"}
    if plan:
        record["plan_id"] = plan
    return record


def plan_change(customer: str, space: str, plan: str) -> dict[str, Any]:
    return {"event_id": uuid.uuid4().hex, "occurred_at": now_iso(), "space_id": space, "customer_id": customer,
            "plan_id": plan, "previous_plan_id": "standard"}


def opportunity(customer: str, space: str, board: str, stage: str) -> dict[str, Any]:
    return {"event_id": uuid.uuid4().hex, "occurred_at": now_iso(), "space_id": space, "customer_id": customer,
            "opportunity_id": uuid.uuid4().hex, "board_id": board, "stage_id": stage}


def command(customer: str, space: str, action: str = "suspend", reason: str = "manual",
            command_id: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"command_id": command_id or str(uuid.uuid4()), "issued_at": now_iso(), "space_id": space,
            "customer_id": customer, "action": action, "reason": reason, "actor": "admin:tests", **extra}


def invoice_job(customer: str, space: str, job_id: str | None = None, amount: str = "120.00",
                currency: str = "EUR") -> dict[str, Any]:
    return {"job_id": job_id or uuid.uuid4().hex, "space_id": space, "customer_id": customer,
            "contract_id": f"contract-{customer}", "period_start": "2026-12-01", "period_end": "2026-12-31",
            "amount": amount, "currency": currency}
