"""(additions) Invoices' status from the invoicing system, and each space's overdue rule."""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field, model_validator

from models.base import ContractModel, Id, Timestamp
from models.commands import MissedInvoices
from models.invoices import CurrencyCode, Money


class InvoiceStatusKind(StrEnum):
    ISSUED = "issued"
    PAID = "paid"
    VOIDED = "voided"


class InvoiceStatus(ContractModel):
    """`invoice.status`: an invoice issued, paid or voided. Records of one invoice may repeat, and a `paid`
    or `voided` may come for an invoice never seen issued (it is then simply settled)."""

    event_id: Id
    occurred_at: Timestamp
    space_id: Id
    customer_id: Id
    invoice_id: Id
    status: InvoiceStatusKind
    due_at: Timestamp | None = None  # required with `issued`
    amount: Money | None = None
    currency: CurrencyCode | None = None

    @model_validator(mode="after")
    def _issued_has_due_at(self) -> InvoiceStatus:
        if self.status is InvoiceStatusKind.ISSUED and self.due_at is None:
            raise ValueError("due_at is required when status is issued")
        return self


class OverdueSetting(ContractModel):
    """`settings.overdue`: whether a space suspends customers with an invoice unpaid too long."""

    space_id: Id
    # Days after `due_at` that an unpaid invoice suspends its customer; null (or no record): the rule is off.
    suspend_after_days: int | None = Field(default=None, ge=0, le=3650)
    lift_when_paid: bool = False  # release the `overdue` reason once the last overdue invoice is settled
    missed_invoices: MissedInvoices = MissedInvoices.BILL  # what that release does with the jobs dropped meanwhile
    updated_at: Timestamp
