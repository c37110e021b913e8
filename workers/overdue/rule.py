"""The overdue rule as pure functions: what an invoice's status does, when an open invoice falls overdue,
and the commands the rule issues. No I/O; the handler and the firer feed rows in and write the result.

- `issued` opens an invoice the rule has not seen; seen already (a repeat, or settled before it was seen
  issued), it changes nothing.
- `paid` / `voided` settles an open invoice, or records one never seen as settled. Settling the last
  overdue invoice (suspended for, or past its moment) releases the `overdue` reason when the space's
  setting says `lift_when_paid`: nothing else lifts.
- An open invoice falls overdue at `due_at` + `suspend_after_days` days, never before the setting's
  `updated_at` (a rule applies from then on); with no setting, or null days, never.
- Command ids derive from the customer and the invoice, so a moment fired twice or a payment read twice
  has one effect, and an invoice already fired never suspends again (an operator's lift holds until a
  new invoice falls overdue).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from models import Action, Cause, InvoiceStatus, InvoiceStatusKind, Reason, Source, SuspensionCommand
from models.base import name_based_id
from topics import INVOICE_STATUS
from workers.runtime.db.invoices import InvoiceRow, RuleSetting

RULE_ACTOR = "rule:overdue"
SUSPEND_NAMESPACE = uuid.UUID("a3c1e0f4-5b7d-4c2e-9e8a-2d6f0b1c3e57")
RELEASE_NAMESPACE = uuid.UUID("c9e2d1a0-7f3b-4a6c-8d5e-1b4f2a0c6e93")


@dataclass(slots=True)
class StatusOutcome:
    invoice: InvoiceRow | None = None  # the invoice's new row; None: unchanged
    release: SuspensionCommand | None = None
    error: str | None = None  # bad input: dead-lettered, nothing changed


def overdue_moment(invoice: InvoiceRow, setting: RuleSetting | None) -> datetime | None:
    if setting is None or setting.suspend_after_days is None or invoice.status != "open" or invoice.due_at is None:
        return None
    return max(invoice.due_at + timedelta(days=setting.suspend_after_days), setting.updated_at)


def apply_status(invoices: dict[str, InvoiceRow], event: InvoiceStatus, partition: int,
                 setting: RuleSetting | None) -> StatusOutcome:
    """One `invoice.status` record over the customer's known invoices (by invoice id)."""
    held = invoices.get(event.invoice_id)
    space = next(iter(invoices.values())).space_id if invoices else event.space_id
    if space != event.space_id:
        return StatusOutcome(error=(f"invoice {event.invoice_id} names space '{event.space_id}' but customer "
                                    f"'{event.customer_id}' belongs to space '{space}'"))
    if event.status is InvoiceStatusKind.ISSUED:
        if held is not None:
            return StatusOutcome()  # a repeat, or settled before it was seen issued
        return StatusOutcome(InvoiceRow(
            event.customer_id, event.invoice_id, event.space_id, "open", event.due_at, event.amount,
            event.currency, event.event_id, partition, event.occurred_at))
    if held is None:
        return StatusOutcome(InvoiceRow(
            event.customer_id, event.invoice_id, event.space_id, event.status.value, None, event.amount,
            event.currency, None, partition, event.occurred_at, settled_at=event.occurred_at))
    if held.status != "open":
        return StatusOutcome()  # settled already
    settled = replace(held, status=event.status.value, updated_at=event.occurred_at, settled_at=event.occurred_at)
    still_overdue = any(_overdue(invoice, setting, event.occurred_at)
                        for invoice_id, invoice in invoices.items() if invoice_id != event.invoice_id)
    release = None
    if _overdue(held, setting, event.occurred_at) and not still_overdue and setting is not None \
            and setting.lift_when_paid:
        release = release_command(settled, event, setting)
    return StatusOutcome(settled, release)


def _overdue(invoice: InvoiceRow, setting: RuleSetting | None, at: datetime) -> bool:
    """Open and suspended for, or past its moment at ``at``: the firer may have published its suspension
    without living to mark it (a release of a reason the customer does not hold changes nothing)."""
    if invoice.status != "open":
        return False
    moment = overdue_moment(invoice, setting)
    return invoice.fired_at is not None or (moment is not None and moment <= at)


def _cause(invoice: InvoiceRow, event_id: str) -> Cause:
    return Cause(topic=INVOICE_STATUS.name, event_id=event_id, invoice_id=invoice.invoice_id)


def suspend_command(invoice: InvoiceRow, moment: datetime) -> SuspensionCommand:
    """The suspension an open invoice makes when its moment comes, issued at that moment."""
    due = invoice.due_at.isoformat() if invoice.due_at is not None else "?"
    return SuspensionCommand(
        command_id=f"overdue:{name_based_id(SUSPEND_NAMESPACE, f'{invoice.customer_id}/{invoice.invoice_id}')}",
        issued_at=moment, space_id=invoice.space_id, customer_id=invoice.customer_id, action=Action.SUSPEND,
        reason=Reason.OVERDUE, actor=RULE_ACTOR, source=Source.OVERDUE_RULE,
        cause=_cause(invoice, invoice.issued_event_id or invoice.invoice_id),
        note=f"invoice {invoice.invoice_id} due {due} is unpaid",
    )


def release_command(invoice: InvoiceRow, event: InvoiceStatus, setting: RuleSetting) -> SuspensionCommand:
    """The release of the `overdue` reason once the customer's last overdue invoice is settled."""
    return SuspensionCommand(
        command_id=f"overdue-release:{name_based_id(RELEASE_NAMESPACE, f'{invoice.customer_id}/{invoice.invoice_id}')}",
        issued_at=event.occurred_at, space_id=invoice.space_id, customer_id=invoice.customer_id,
        action=Action.RELEASE, reason=Reason.OVERDUE, actor=RULE_ACTOR, source=Source.OVERDUE_RULE,
        cause=_cause(invoice, event.event_id), missed_invoices=setting.missed_invoices,
        note=f"invoice {invoice.invoice_id} {event.status.value}",
    )
