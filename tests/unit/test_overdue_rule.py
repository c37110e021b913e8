"""The overdue rule as pure functions (workers/overdue/rule.py), without any service."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from models import Action, InvoiceStatus, InvoiceStatusKind, MissedInvoices, Reason, Source
from workers.overdue.rule import apply_status, overdue_moment, suspend_command
from workers.runtime.db.invoices import InvoiceRow, RuleSetting

T0 = datetime(2026, 11, 1, 9, tzinfo=UTC)


def status(invoice: str, kind: InvoiceStatusKind, event: str | None = None, at: datetime = T0,
           space: str = "s1") -> InvoiceStatus:
    return InvoiceStatus(event_id=event or f"{invoice}-{kind.value}", occurred_at=at, space_id=space,
                         customer_id="c1", invoice_id=invoice, status=kind,
                         due_at=T0 + timedelta(days=10) if kind is InvoiceStatusKind.ISSUED else None,
                         amount="120.00", currency="EUR")


def rule(days: int | None = 3, lift: bool = True, updated_at: datetime = T0 - timedelta(days=30)) -> RuleSetting:
    return RuleSetting("s1", days, lift, MissedInvoices.WAIVE, updated_at)


def fold(events: list[InvoiceStatus], setting: RuleSetting | None = None,
         fired: tuple[str, ...] = ()) -> tuple[dict[str, InvoiceRow], list[str]]:
    """Apply the events in order; mark ``fired`` invoices as suspended for once opened; return the invoices
    and the ids of the release commands issued."""
    invoices: dict[str, InvoiceRow] = {}
    releases = []
    for event in events:
        outcome = apply_status(invoices, event, 0, setting)
        assert outcome.error is None
        if outcome.invoice is not None:
            invoices[event.invoice_id] = outcome.invoice
            if event.invoice_id in fired and outcome.invoice.status == "open":
                outcome.invoice.fired_at = T0 + timedelta(days=13)
        if outcome.release is not None:
            releases.append(outcome.release.command_id)
    return invoices, releases


def test_an_invoice_falls_overdue_its_days_after_due_and_never_before_the_rule_was_set() -> None:
    invoices, _ = fold([status("i1", InvoiceStatusKind.ISSUED)])
    invoice = invoices["i1"]
    assert overdue_moment(invoice, rule(3)) == T0 + timedelta(days=13)
    assert overdue_moment(invoice, rule(0)) == T0 + timedelta(days=10)
    late = T0 + timedelta(days=40)
    assert overdue_moment(invoice, rule(3, updated_at=late)) == late
    assert overdue_moment(invoice, rule(None)) is None and overdue_moment(invoice, None) is None


def test_a_settled_invoice_never_falls_overdue() -> None:
    invoices, _ = fold([status("i1", InvoiceStatusKind.ISSUED), status("i1", InvoiceStatusKind.PAID)])
    assert invoices["i1"].status == "paid" and overdue_moment(invoices["i1"], rule()) is None


def test_paid_before_issued_stays_settled_and_a_repeated_issue_changes_nothing() -> None:
    invoices, _ = fold([status("i1", InvoiceStatusKind.PAID), status("i1", InvoiceStatusKind.ISSUED),
                        status("i2", InvoiceStatusKind.ISSUED, at=T0),
                        status("i2", InvoiceStatusKind.ISSUED, "again", at=T0 + timedelta(days=1))])
    assert (invoices["i1"].status, invoices["i1"].due_at) == ("paid", None)
    assert (invoices["i2"].status, invoices["i2"].issued_event_id) == ("open", "i2-issued")


def test_settling_the_last_overdue_invoice_releases_only_with_lift_when_paid() -> None:
    events = [status("i1", InvoiceStatusKind.ISSUED), status("i2", InvoiceStatusKind.ISSUED),
              status("i1", InvoiceStatusKind.PAID), status("i2", InvoiceStatusKind.VOIDED)]
    _, releases = fold(events, rule(lift=True), fired=("i1", "i2"))
    assert len(releases) == 1 and releases[0].startswith("overdue-release:")  # after the second, not the first
    assert fold(events, rule(lift=False), fired=("i1", "i2"))[1] == []
    assert fold(events, None, fired=("i1", "i2"))[1] == []


def test_settling_an_invoice_never_fired_releases_nothing() -> None:
    _, releases = fold([status("i1", InvoiceStatusKind.ISSUED), status("i1", InvoiceStatusKind.PAID)], rule())
    assert releases == []


def test_the_same_payment_read_twice_releases_once() -> None:
    paid = status("i1", InvoiceStatusKind.PAID)
    _, releases = fold([status("i1", InvoiceStatusKind.ISSUED), paid, paid], rule(), fired=("i1",))
    assert len(releases) == 1


def test_an_invoice_of_another_space_for_the_same_customer_is_refused() -> None:
    invoices, _ = fold([status("i1", InvoiceStatusKind.ISSUED)])
    outcome = apply_status(invoices, status("i2", InvoiceStatusKind.ISSUED, space="s2"), 0, rule())
    assert outcome.invoice is None and outcome.error is not None and "'s1'" in outcome.error


def test_the_suspension_names_its_invoice_and_has_one_id_per_invoice() -> None:
    invoices, _ = fold([status("i1", InvoiceStatusKind.ISSUED), status("i2", InvoiceStatusKind.ISSUED)])
    moment = T0 + timedelta(days=13)
    first, again, other = (suspend_command(invoices["i1"], moment), suspend_command(invoices["i1"], moment),
                           suspend_command(invoices["i2"], moment))
    assert first.command_id == again.command_id != other.command_id
    assert (first.action, first.reason, first.actor, first.source, first.issued_at) == (
        Action.SUSPEND, Reason.OVERDUE, "rule:overdue", Source.OVERDUE_RULE, moment)
    assert first.cause is not None and (first.cause.topic, first.cause.invoice_id, first.cause.event_id) == (
        "invoice.status", "i1", "i1-issued")


def test_paid_past_its_moment_releases_though_the_firer_never_marked_it() -> None:
    """The firer published the suspension and died before marking the invoice fired: the payment, after the
    moment, still releases (a release of a reason not held changes nothing); before the moment, it does not."""
    issued = status("i1", InvoiceStatusKind.ISSUED)
    after = status("i1", InvoiceStatusKind.PAID, at=T0 + timedelta(days=14))  # the moment is day 13
    before = status("i1", InvoiceStatusKind.PAID, at=T0 + timedelta(days=12))
    assert len(fold([issued, after], rule())[1]) == 1
    assert fold([issued, before], rule())[1] == []
