"""The state and billing handlers without PostgreSQL: an in-memory BatchStore in place of the unit of work."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

import orjson
from aiokafka.structs import ConsumerRecord

from models import CustomerState, MissedInvoices, encode
from tests.integration import builders
from tests.support import consumer_records
from topics import (
    DEADLETTER,
    INVOICE_JOBS,
    INVOICE_JOBS_ACCEPTED,
    INVOICE_JOBS_DROPPED,
    INVOICE_STATUS,
    SUSPENSION_COMMANDS,
)
from workers.billing.handler import BillingHandler
from workers.overdue.handler import InvoiceStatusHandler
from workers.overdue.rule import suspend_command
from workers.runtime.db.invoices import InvoiceRow, RuleSetting
from workers.runtime.db.repository import DecisionRow, HistoryRow, ScheduleRow
from workers.runtime.metrics import Metrics
from workers.runtime.publishing import OutgoingRecord
from workers.state.handler import StateHandler


@dataclass
class MemoryStore:
    """A BatchStore holding what PostgreSQL would, for one test."""

    states: dict[str, CustomerState] = field(default_factory=dict)
    history: list[HistoryRow] = field(default_factory=list)
    processed: dict[str, str] = field(default_factory=dict)
    schedules: dict[str, ScheduleRow] = field(default_factory=dict)
    decisions: dict[str, DecisionRow] = field(default_factory=dict)

    async def lock_states(self, customer_ids: Iterable[str], *, share: bool = False) -> dict[str, CustomerState]:
        return {c: replace(self.states[c]) for c in customer_ids if c in self.states}

    async def read_for_commands(self, customer_ids: Iterable[str],
                                command_ids: Iterable[str]) -> tuple[dict[str, CustomerState], set[str]]:
        return await self.lock_states(customer_ids), {c for c in command_ids if c in self.processed}

    async def write_applied(self, states: Sequence[CustomerState], history: Sequence[HistoryRow],
                            outcomes: Sequence[tuple[str, str]], at: datetime, schedules: Sequence[ScheduleRow]) -> None:
        self.states.update((s.customer_id, s) for s in states)
        self.history.extend(history)
        self.processed.update(outcomes)
        self.schedules.update((r.schedule_id, r) for r in schedules)

    async def settle_dropped_jobs(self, settlements: dict[str, tuple[str, str]], at: datetime) -> dict[str, list[str]]:
        settled: dict[str, list[str]] = {c: [] for c in settlements}
        for job_id, row in self.decisions.items():
            if row.customer_id in settlements and row.status == "dropped":
                self.decisions[job_id] = replace(row, status=settlements[row.customer_id][0])
                settled[row.customer_id].append(row.job)
        return settled

    async def decided_jobs(self, job_ids: Iterable[str]) -> set[str]:
        return {j for j in job_ids if j in self.decisions}

    async def insert_decisions(self, rows: Sequence[DecisionRow]) -> None:
        self.decisions.update((r.job_id, r) for r in rows)

    invoices: dict[tuple[str, str], InvoiceRow] = field(default_factory=dict)
    rules: dict[str, RuleSetting] = field(default_factory=dict)

    async def invoices_of(self, customer_ids: Iterable[str]) -> dict[str, dict[str, InvoiceRow]]:
        wanted: set[str] = set(customer_ids)
        found: dict[str, dict[str, InvoiceRow]] = {}
        for (customer, invoice_id), row in self.invoices.items():
            if customer in wanted:
                found.setdefault(customer, {})[invoice_id] = replace(row)
        return found

    async def write_invoices(self, rows: Sequence[InvoiceRow]) -> None:
        self.invoices.update(((r.customer_id, r.invoice_id), r) for r in rows)

    async def rule_settings(self, space_ids: Iterable[str]) -> dict[str, RuleSetting]:
        return {s: self.rules[s] for s in space_ids if s in self.rules}


def records(values: list[dict[str, object]], topic: str = SUSPENSION_COMMANDS.name) -> list[ConsumerRecord]:
    return consumer_records(values, topic)


def on(topic: str, outgoing: list[OutgoingRecord]) -> list[dict[str, object]]:
    return [orjson.loads(record.value) for record in outgoing if record.topic == topic]


def test_a_suspension_a_duplicate_and_a_lift_that_bills_the_dropped_job() -> None:
    store, state, billing = MemoryStore(), StateHandler("state", Metrics()), BillingHandler("billing", Metrics())
    suspend = builders.command("c1", "s1")
    out = asyncio.run(state.handle(store, records([suspend, suspend])))  # the same command twice in one batch
    assert [r["version"] for r in on("suspension.state", out)] == [1]
    assert [e["type"] for e in on("suspension.events", out)] == ["suspended"]
    assert [row.command_id for row in store.history] == [suspend["command_id"]]

    job = builders.invoice_job("c1", "s1")
    decided = asyncio.run(billing.handle(store, records([job], INVOICE_JOBS.name)))
    assert [r["job_id"] for r in on(INVOICE_JOBS_DROPPED.name, decided)] == [job["job_id"]]

    lifted = asyncio.run(state.handle(store, records([builders.command("c1", "s1", action="lift")])))
    assert [e["invoices_billed"] for e in on("suspension.events", lifted)] == [[job["job_id"]]]
    assert on(INVOICE_JOBS_ACCEPTED.name, lifted) == [job | {"rebilled": True}]
    assert store.states["c1"].version == 2 and not store.states["c1"].suspended


def test_a_command_for_another_space_is_dead_lettered_and_changes_nothing() -> None:
    store, state = MemoryStore(), StateHandler("state", Metrics())
    asyncio.run(state.handle(store, records([builders.command("c2", "s1")])))
    out = asyncio.run(state.handle(store, records([builders.command("c2", "elsewhere", action="lift")])))
    [letter] = on(DEADLETTER.name, out)
    assert "space" in str(letter["error"]) and store.states["c2"].suspended and store.states["c2"].version == 1


def _status(invoice_id: str, status: str, space: str = "s1", **fields: object) -> dict[str, object]:
    return {"event_id": f"{invoice_id}-{status}", "occurred_at": "2026-12-01T10:00:00Z", "space_id": space,
            "customer_id": "c3", "invoice_id": invoice_id, "status": status, **fields}


def test_the_last_overdue_invoice_paid_releases_the_reason_and_waives_the_dropped_job() -> None:
    """invoice.status through the overdue handler, its release through the state handler: the customer is
    lifted and the job dropped meanwhile waived, as the space's rule says."""
    store = MemoryStore(rules={"s1": RuleSetting("s1", 0, True, MissedInvoices.WAIVE,
                                                 datetime(2026, 11, 1, tzinfo=UTC))})
    overdue, state, billing = (InvoiceStatusHandler("overdue", Metrics()), StateHandler("state", Metrics()),
                               BillingHandler("billing", Metrics()))
    due = "2026-12-01T09:00:00Z"
    asyncio.run(overdue.handle(store, records([_status("i1", "issued", due_at=due)], INVOICE_STATUS.name)))
    invoice = store.invoices[("c3", "i1")]
    assert invoice.due_at is not None
    suspend = suspend_command(invoice, invoice.due_at)
    invoice.fired_at, invoice.fired_command_id = invoice.due_at, suspend.command_id  # what the firer marks
    asyncio.run(state.handle(store, records([orjson.loads(encode(suspend))])))
    job = builders.invoice_job("c3", "s1")
    asyncio.run(billing.handle(store, records([job], INVOICE_JOBS.name)))

    out = asyncio.run(overdue.handle(store, records([_status("i1", "paid"), _status("x", "issued", space="s2",
                                                                                     due_at=due)],
                                                    INVOICE_STATUS.name)))
    [release] = on(SUSPENSION_COMMANDS.name, out)
    assert (release["action"], release["reason"], release["missed_invoices"]) == ("release", "overdue", "waive")
    [letter] = on(DEADLETTER.name, out)  # another space's invoice for this customer
    assert "belongs to space 's1'" in str(letter["error"])
    assert store.invoices[("c3", "i1")].status == "paid" and ("c3", "x") not in store.invoices

    lifted = asyncio.run(state.handle(store, records([release])))
    [event] = on("suspension.events", lifted)
    assert (event["type"], event["source"], event["invoices_waived"]) == ("lifted", "overdue_rule", [job["job_id"]])
    assert on(INVOICE_JOBS_ACCEPTED.name, lifted) == []  # waived, not billed
