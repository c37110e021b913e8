"""Pure rule: given an invoice job and the customer's committed state, accept or drop?"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from models import CustomerState, InvoiceJob


class Decision(StrEnum):
    ACCEPTED = "accepted"
    DROPPED = "dropped"
    DUPLICATE = "duplicate"  # job id decided before: same decision, nothing emitted again
    REJECTED = "rejected"  # breaks a rule: dead letter


@dataclass(frozen=True)
class JobDecision:
    decision: Decision
    suspension_version: int | None = None
    error: str | None = None


def decide(job: InvoiceJob, state: CustomerState | None, already_decided: bool) -> JobDecision:
    if already_decided:
        return JobDecision(Decision.DUPLICATE)
    if state is not None and state.space_id != job.space_id:
        return JobDecision(
            Decision.REJECTED,
            error=(f"invoice job {job.job_id} names space '{job.space_id}' but customer "
                   f"'{job.customer_id}' belongs to space '{state.space_id}'"),
        )
    if state is not None and state.suspended:
        return JobDecision(Decision.DROPPED, suspension_version=state.version)
    return JobDecision(Decision.ACCEPTED)
