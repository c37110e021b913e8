"""Invoice jobs from the billing run, and what the billing consumer makes of them."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated

import orjson
from pydantic import StringConstraints, model_validator

from models.base import ContractModel, Id

Money = Annotated[str, StringConstraints(pattern=r"^-?\d{1,15}(\.\d{1,6})?$")]
CurrencyCode = Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]


class InvoiceJob(ContractModel):
    job_id: Id
    space_id: Id
    customer_id: Id
    contract_id: Id
    period_start: date
    period_end: date
    amount: Money
    currency: CurrencyCode

    @model_validator(mode="after")
    def _period_in_order(self) -> InvoiceJob:
        if self.period_end < self.period_start:
            raise ValueError("period_end is before period_start")
        return self


class AcceptedInvoiceJob(InvoiceJob):
    rebilled: bool


class DroppedInvoiceJob(InvoiceJob):
    dropped_at: datetime
    suspension_version: int


# The records out are the job exactly as received (unknown fields included, as the contract says) plus the
# decision's fields: built here, once, and checked against the models above by the tests.


def accepted_job_value(job_text: str | bytes, rebilled: bool) -> bytes:
    """An ``AcceptedInvoiceJob``: the job as received, plus ``rebilled``."""
    job = orjson.loads(job_text)
    job["rebilled"] = rebilled
    return orjson.dumps(job)


def dropped_job_value(job_text: str | bytes, dropped_at: str, suspension_version: int | None) -> bytes:
    """A ``DroppedInvoiceJob``: the job as received, plus when and under which suspension it was dropped."""
    job = orjson.loads(job_text)
    job["dropped_at"] = dropped_at
    job["suspension_version"] = suspension_version
    return orjson.dumps(job)
