"""A space's customers: list, read one and its history, suspend and lift (now, or scheduled)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, HTTPException, Query, Response

from models import Action, MissedInvoices, Reason, SuspensionState
from suspensions.access import Principal
from suspensions.api.deps import ERRORS, Ops, Who
from suspensions.api.schemas import (
    Accepted,
    Applied,
    CustomerPage,
    HistoryEntry,
    LiftRequest,
    PersonProfile,
    SuspendRequest,
)
from suspensions.api.service import Operations
from suspensions.operators import InvoiceView

router = APIRouter(prefix="/api/v1/spaces/{space}/customers", tags=["customers"])

# A suspend or lift: accepted (202), or with ?wait=true applied (200) or not in time (504).
ACT_RESPONSES: dict[int | str, dict[str, Any]] = ERRORS | {
    200: {"model": Applied, "description": "With ?wait=true: applied"},
    504: {"description": "With ?wait=true: not applied in time"},
}


@router.get("", response_model=CustomerPage, responses=ERRORS)
async def list_customers(space: str, who: Who, ops: Ops, suspended: bool | None = None,
                         cursor: Annotated[str, Query(max_length=200)] = "",
                         search: Annotated[str, Query(max_length=200)] = "", reason: Reason | None = None,
                         limit: Annotated[int, Query(ge=1, le=500)] = 100) -> CustomerPage:
    """The space's customers in customer id order; pass `next_cursor` back as `cursor` for the next page.
    `search`: a case-insensitive prefix of the customer's id, name or email; `reason`: only those suspended for it."""
    found, next_cursor = await ops.customers(who, space, suspended=suspended, after=cursor, search=search,
                                             reason=reason, limit=limit)
    return CustomerPage(customers=[person.state.to_record() for person in found], next_cursor=next_cursor,
                        profiles=[PersonProfile(customer_id=person.state.customer_id, display_name=person.display_name,
                                                email=person.email)
                                  for person in found if person.display_name or person.email])


@router.get("/{customer}", response_model=SuspensionState, responses=ERRORS)
async def get_customer(space: str, customer: str, who: Who, ops: Ops) -> SuspensionState:
    return (await ops.customer(who, space, customer)).to_record()


@router.get("/{customer}/history", response_model=list[HistoryEntry], responses=ERRORS)
async def get_history(space: str, customer: str, who: Who, ops: Ops) -> list[HistoryEntry]:
    return await ops.history(who, space, customer)


@router.get("/{customer}/invoices", response_model=list[InvoiceView], responses=ERRORS)
async def get_invoices(space: str, customer: str, who: Who, ops: Ops) -> list[InvoiceView]:
    """The customer's invoices as the overdue rule knows them (`invoice.status`): open, overdue and settled, with
    their due and overdue moments in UTC and in the space's time zone."""
    return await ops.invoices(who, space, customer)


async def _act(ops: Operations, who: Principal, space: str, customer: str, action: Action, note: str | None,
               missed: MissedInvoices | None, at: str | None, until: str | None, wait: bool, timeout: float,
               response: Response) -> Accepted | Applied:
    acted = await ops.act(who, space, customer, action, note=note, missed=missed, at=at, until=until, wait=wait,
                          timeout_s=timeout)
    if not wait:
        response.status_code = 202
        return Accepted(command_id=acted.command.command_id)
    if acted.outcome is None:
        raise HTTPException(504, f"command {acted.command.command_id} was published but not applied in time")
    response.status_code = 200
    return Applied(command_id=acted.command.command_id, outcome=acted.outcome,
                   state=acted.state.to_record() if acted.state else None)


@router.post("/{customer}/suspend", status_code=202, response_model=Accepted | Applied, responses=ACT_RESPONSES)
async def suspend(space: str, customer: str, who: Who, ops: Ops, response: Response,
                  body: Annotated[SuspendRequest | None, Body()] = None, wait: bool = False,
                  timeout: Annotated[float, Query(gt=0, le=60)] = 10.0) -> Accepted | Applied:
    """Suspend the customer (reason `manual`), now or scheduled `at` a moment (and lifted `until` one)."""
    body = body or SuspendRequest()
    return await _act(ops, who, space, customer, Action.SUSPEND, body.note, None, body.at, body.until, wait,
                      timeout, response)


@router.post("/{customer}/lift", status_code=202, response_model=Accepted | Applied, responses=ACT_RESPONSES)
async def lift(space: str, customer: str, who: Who, ops: Ops, response: Response,
               body: Annotated[LiftRequest | None, Body()] = None, wait: bool = False,
               timeout: Annotated[float, Query(gt=0, le=60)] = 10.0) -> Accepted | Applied:
    """Lift the customer's suspension whatever its reasons, now or scheduled `at` a moment."""
    body = body or LiftRequest()
    return await _act(ops, who, space, customer, Action.LIFT, body.note, body.missed_invoices, body.at, None,
                      wait, timeout, response)
