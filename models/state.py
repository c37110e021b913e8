"""The published suspension state of one customer (compacted topic)."""

from __future__ import annotations

from datetime import datetime

from models.base import ContractModel, Id
from models.commands import Reason


class SuspensionState(ContractModel):
    space_id: Id
    customer_id: Id
    suspended: bool
    reasons: list[Reason]
    suspended_at: datetime | None
    lifted_at: datetime | None
    version: int
    updated_at: datetime
    last_command_id: Id
