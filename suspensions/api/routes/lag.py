"""Consumer lag of the service's groups (admins only)."""

from __future__ import annotations

from fastapi import APIRouter

from suspensions.api.deps import ERRORS, Ops, Who
from suspensions.api.schemas import GroupLag

router = APIRouter(prefix="/api/v1/lag", tags=["lag"])


@router.get("", response_model=list[GroupLag], responses=ERRORS)
async def lag(who: Who, ops: Ops) -> list[GroupLag]:
    """What `suspensions lag --json` reports (admins only)."""
    return await ops.lag(who)
