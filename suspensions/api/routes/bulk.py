"""Bulk jobs: suspend or lift every customer of a CSV upload, then follow the job to its report."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Request

from models import Action, MissedInvoices
from suspensions.api.deps import ERRORS, Ops, Who
from suspensions.api.edge import check_bulk_lines
from suspensions.api.schemas import BulkAccepted, BulkStatus

router = APIRouter(prefix="/api/v1/spaces/{space}/bulk", tags=["bulk"])

CSV_BODY = {"requestBody": {"required": True, "content": {"text/csv": {"schema": {
    "type": "string", "description": "customer_id,space_id[,note] per line, header optional"}}}}}


@router.post("", status_code=202, response_model=BulkAccepted,
             responses=ERRORS | {429: {"description": "The token runs its most bulk jobs at once already; "
                                                      "retry after `Retry-After` seconds"}},
             openapi_extra=CSV_BODY)
async def bulk(space: str, request: Request, who: Who, ops: Ops, action: Literal["suspend", "lift"] = "suspend",
               missed_invoices: MissedInvoices = MissedInvoices.BILL) -> BulkAccepted:
    """Suspend or lift every customer of a CSV body (the CLI's format); follow it at bulk/{bulk_id}."""
    await ops.may_start_bulk(who, space)  # a refused upload is not read
    text = (await request.body()).decode("utf-8", errors="replace")  # bounded by the edge (edge.py)
    check_bulk_lines(text, ops.settings.api_max_bulk_lines)
    chosen = Action(action)
    bulk_id = await ops.start_bulk(who, space, chosen, text, missed_invoices if chosen is Action.LIFT else None)
    return BulkAccepted(bulk_id=bulk_id)


@router.get("/{bulk_id}", response_model=BulkStatus, responses=ERRORS)
async def bulk_status(space: str, bulk_id: str, who: Who, ops: Ops) -> BulkStatus:
    """Progress (lines read, commands published), then the per-line report once done."""
    return await ops.bulk(who, space, bulk_id)
