"""The billing rule, without any service."""

from __future__ import annotations

from datetime import UTC, date, datetime

from models import InvoiceJob, Reason
from workers.billing.decisions import Decision, decide
from workers.state.transitions import CustomerState

AT = datetime(2026, 11, 25, tzinfo=UTC)
JOB = InvoiceJob(job_id="j", space_id="s1", customer_id="c1", contract_id="k", period_start=date(2026, 12, 1),
                 period_end=date(2026, 12, 31), amount="10.00", currency="EUR")


def state(suspended: bool, space: str = "s1", version: int = 3) -> CustomerState:
    return CustomerState("c1", space, suspended, (Reason.MANUAL,) if suspended else (), AT, None, version, AT, "k")


def test_unknown_or_active_customers_are_invoiced() -> None:
    assert decide(JOB, None, False).decision is Decision.ACCEPTED
    assert decide(JOB, state(False), False).decision is Decision.ACCEPTED


def test_suspended_customers_are_dropped_with_the_version() -> None:
    verdict = decide(JOB, state(True, version=7), False)
    assert (verdict.decision, verdict.suspension_version) == (Decision.DROPPED, 7)


def test_a_decided_job_is_never_decided_again() -> None:
    assert decide(JOB, state(True), True).decision is Decision.DUPLICATE


def test_a_job_for_another_space_is_rejected() -> None:
    verdict = decide(JOB, state(True, space="s2"), False)
    assert verdict.decision is Decision.REJECTED and verdict.error and "'s2'" in verdict.error
