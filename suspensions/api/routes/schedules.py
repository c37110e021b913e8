"""A space's pending scheduled suspensions and lifts."""

from __future__ import annotations

from fastapi import APIRouter

from suspensions.api.deps import ERRORS, Ops, Who
from suspensions.operators import PendingSchedule

router = APIRouter(prefix="/api/v1/spaces/{space}/schedules", tags=["schedules"])


@router.get("", response_model=list[PendingSchedule], responses=ERRORS)
async def schedules(space: str, who: Who, ops: Ops) -> list[PendingSchedule]:
    """Pending schedules, soonest first, in UTC and the space's local time."""
    return await ops.pending_schedules(who, space)
