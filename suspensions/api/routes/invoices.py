"""A space's invoice jobs not billed at their cycle (dropped while suspended), and how they were settled."""

from __future__ import annotations

from fastapi import APIRouter

from suspensions.api.deps import ERRORS, Ops, Who
from suspensions.api.schemas import DroppedInvoices

router = APIRouter(prefix="/api/v1/spaces/{space}/invoices", tags=["invoices"])


@router.get("/dropped", response_model=DroppedInvoices, responses=ERRORS)
async def dropped(space: str, who: Who, ops: Ops) -> DroppedInvoices:
    """Invoice jobs dropped, rebilled and waived, with totals per currency."""
    return await ops.dropped(who, space)
