"""A space at a glance: the overview's figures in JSON, and its suspensions as CSV (issue 26)."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import Response

from suspensions import overview
from suspensions.access import Principal
from suspensions.api.deps import ERRORS, Ops, Who
from suspensions.api.exports import suspensions_csv
from suspensions.api.schemas import SpaceSummary
from suspensions.api.service import Operations

router = APIRouter(prefix="/api/v1/spaces/{space}", tags=["summary"])

RANGE_ERRORS: dict[int | str, dict[str, Any]] = ERRORS | {
    422: {"description": "`from` after `to`, or a range longer than 366 days"}}
From = Annotated[date | None, Query(alias="from", description="First day (YYYY-MM-DD, the space's zone); "
                                                               "default: 29 days before `to`")]
To = Annotated[date | None, Query(alias="to", description="Last day, inclusive; default: today")]


async def checked_range(ops: Operations, who: Principal, space: str, first: date | None,
                        last: date | None) -> overview.DayRange:
    Operations.visible(who, space)  # another space: 404 before anything about the range
    try:
        return await ops.day_range(space, first, last)
    except overview.BadRange as error:
        raise HTTPException(422, str(error)) from None


@router.get("/summary", response_model=SpaceSummary, responses=RANGE_ERRORS)
async def summary(space: str, who: Who, ops: Ops, first: From = None, last: To = None) -> SpaceSummary:
    """Counts now, and per day of the range: customers suspended by reason, suspensions and lifts, time to
    lift, invoice jobs dropped, billed back and waived with amounts per currency."""
    await checked_range(ops, who, space, first, last)
    return await ops.summary(who, space, first, last)


@router.get("/suspensions.csv", response_class=Response, responses=RANGE_ERRORS | {
    200: {"description": "One row per suspension that started in the range",
          "content": {"text/csv": {"schema": {"type": "string"}}}}})
async def suspensions_export(space: str, who: Who, ops: Ops, first: From = None, last: To = None) -> Response:
    """The suspensions that started in the range (CSV): customer, name and email if known, reasons, when,
    by whom, notes, and the invoice jobs dropped, billed back and waived during each, per currency."""
    day_range = await checked_range(ops, who, space, first, last)
    return csv_response(suspensions_csv(await ops.suspensions(who, space, day_range)), space, day_range)


def csv_response(text: str, space: str, day_range: overview.DayRange) -> Response:
    name = f"suspensions-{day_range.first}-{day_range.last}.csv"
    return Response(text, media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="{name}"',
                             "X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"})
