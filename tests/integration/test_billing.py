"""Issue 4: the billing consumer across the real broker and PostgreSQL."""

from __future__ import annotations

import json

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer

from models import AcceptedInvoiceJob, DroppedInvoiceJob, decode
from tests.integration import builders
from tests.support import TopicTail, WorkerProcess, run_cli, send, uid, wait_until
from topics import (
    DEADLETTER,
    INVOICE_JOBS,
    INVOICE_JOBS_ACCEPTED,
    INVOICE_JOBS_DROPPED,
    SUSPENSION_COMMANDS,
)
from workers.runtime.config import Settings

pytestmark = pytest.mark.integration


async def _applied(db: asyncpg.Pool, command_id: str) -> bool:
    return bool(await db.fetchval("SELECT 1 FROM processed_commands WHERE command_id = $1", command_id))


async def _suspend(producer: AIOKafkaProducer, db: asyncpg.Pool, customer: str, space: str) -> dict:
    command = builders.command(customer, space)
    await send(producer, SUSPENSION_COMMANDS.name, customer, command)
    await wait_until(lambda: _applied(db, command["command_id"]), what="suspension committed")
    return command


async def _lift(producer: AIOKafkaProducer, db: asyncpg.Pool, customer: str, space: str, **extra: str) -> dict:
    command = builders.command(customer, space, action="lift", **extra)
    await send(producer, SUSPENSION_COMMANDS.name, customer, command)
    await wait_until(lambda: _applied(db, command["command_id"]), what="lift committed")
    return command


async def test_active_customer_is_invoiced(workers: WorkerProcess, producer: AIOKafkaProducer, tail: TopicTail,
                                           db: asyncpg.Pool) -> None:
    space, customer = uid("space"), uid("cust")
    job = builders.invoice_job(customer, space) | {"po_number": "PO-1"}  # unknown fields pass through
    await send(producer, INVOICE_JOBS.name, customer, job)
    [accepted] = await tail.wait_for(INVOICE_JOBS_ACCEPTED.name, job_id=job["job_id"])
    assert accepted == job | {"rebilled": False}
    row = await db.fetchrow("SELECT status, suspension_version FROM invoice_decisions WHERE job_id = $1",
                            job["job_id"])
    assert row["status"] == "accepted" and row["suspension_version"] is None


async def test_suspended_customer_is_not_invoiced_then_billed_on_lift(
    workers: WorkerProcess, producer: AIOKafkaProducer, tail: TopicTail, db: asyncpg.Pool
) -> None:
    space, customer = uid("space"), uid("cust")
    await _suspend(producer, db, customer, space)
    jobs = [builders.invoice_job(customer, space) for _ in range(2)]
    for job in jobs:
        await send(producer, INVOICE_JOBS.name, customer, job)
    dropped = [(await tail.wait_for(INVOICE_JOBS_DROPPED.name, job_id=job["job_id"]))[0] for job in jobs]
    assert all(d["suspension_version"] == 1 and d["dropped_at"] for d in dropped)
    # Nothing accepted while suspended: checked at the end, behind a job the billing consumer accepts.

    lift = await _lift(producer, db, customer, space)  # missed_invoices defaults to bill
    rebilled = await tail.wait_for(INVOICE_JOBS_ACCEPTED.name, count=2, customer_id=customer)
    assert sorted(r["job_id"] for r in rebilled) == sorted(j["job_id"] for j in jobs)
    assert all(r["rebilled"] is True for r in rebilled)
    statuses = await db.fetch("SELECT status, settled_by_command FROM invoice_decisions WHERE customer_id = $1",
                              customer)
    assert {(s["status"], s["settled_by_command"]) for s in statuses} == {("rebilled", lift["command_id"])}

    # A second lift, and a redelivered lift, bill nothing twice. The marker behind them on the commands
    # partition bills on invoice.jobs.accepted too: a job dropped under a new suspension, billed by a new
    # lift, published by the same state worker after whatever the lifts before it published there.
    await _lift(producer, db, customer, space)
    await send(producer, SUSPENSION_COMMANDS.name, customer, lift)
    await _suspend(producer, db, customer, space)
    late = builders.invoice_job(customer, space)
    await send(producer, INVOICE_JOBS.name, customer, late)
    await tail.wait_for(INVOICE_JOBS_DROPPED.name, job_id=late["job_id"])
    await _lift(producer, db, customer, space)
    await tail.wait_for(INVOICE_JOBS_ACCEPTED.name, job_id=late["job_id"])
    accepted = [(r["job_id"], r["rebilled"]) for r in tail.matching(INVOICE_JOBS_ACCEPTED.name, customer_id=customer)]
    assert sorted(accepted[:2]) == sorted((j["job_id"], True) for j in jobs)
    assert accepted[2:] == [(late["job_id"], True)]

    # After the lift, new jobs are accepted (and a job arriving again keeps its first decision). The fresh
    # job is the marker: behind the one arriving again and the first two on the invoice.jobs partition, and
    # accepted by the same billing consumer that would have published any of theirs.
    fresh = builders.invoice_job(customer, space)
    await send(producer, INVOICE_JOBS.name, customer, jobs[0])  # arrives again: before the marker, same partition
    await send(producer, INVOICE_JOBS.name, customer, fresh)
    [accepted_fresh] = await tail.wait_for(INVOICE_JOBS_ACCEPTED.name, job_id=fresh["job_id"])
    assert accepted_fresh["rebilled"] is False
    # Every record ever accepted for this customer: the jobs only when billed on a lift (never while
    # suspended), the job that arrived again not again (its decision kept), then the fresh one.
    accepted = [(r["job_id"], r["rebilled"]) for r in tail.matching(INVOICE_JOBS_ACCEPTED.name, customer_id=customer)]
    assert sorted(accepted[:2]) == sorted((j["job_id"], True) for j in jobs)
    assert accepted[2:] == [(late["job_id"], True), (fresh["job_id"], False)]
    assert len(tail.matching(INVOICE_JOBS_DROPPED.name, job_id=jobs[0]["job_id"])) == 1
    assert await db.fetchval("SELECT status FROM invoice_decisions WHERE job_id = $1", jobs[0]["job_id"]) == "rebilled"


async def test_waive_on_lift(workers: WorkerProcess, producer: AIOKafkaProducer, tail: TopicTail,
                             db: asyncpg.Pool) -> None:
    space, customer = uid("space"), uid("cust")
    await _suspend(producer, db, customer, space)
    job = builders.invoice_job(customer, space, amount="99.50", currency="GBP")
    await send(producer, INVOICE_JOBS.name, customer, job)
    await tail.wait_for(INVOICE_JOBS_DROPPED.name, job_id=job["job_id"])
    await _lift(producer, db, customer, space, missed_invoices="waive")
    await _lift(producer, db, customer, space, missed_invoices="bill")  # nothing left to bill
    marker = builders.invoice_job(customer, space)
    await send(producer, INVOICE_JOBS.name, customer, marker)
    await tail.wait_for(INVOICE_JOBS_ACCEPTED.name, job_id=marker["job_id"])
    assert tail.matching(INVOICE_JOBS_ACCEPTED.name, job_id=job["job_id"]) == []
    assert await db.fetchval("SELECT status FROM invoice_decisions WHERE job_id = $1", job["job_id"]) == "waived"


async def test_boundary_in_both_orders(workers: WorkerProcess, producer: AIOKafkaProducer, tail: TopicTail,
                                       db: asyncpg.Pool) -> None:
    """A job processed after the suspension commit is dropped; after the lift commit it is accepted."""
    space, customer = uid("space"), uid("cust")
    before = builders.invoice_job(customer, space)
    await send(producer, INVOICE_JOBS.name, customer, before)
    await tail.wait_for(INVOICE_JOBS_ACCEPTED.name, job_id=before["job_id"])
    await _suspend(producer, db, customer, space)
    during = builders.invoice_job(customer, space)
    await send(producer, INVOICE_JOBS.name, customer, during)
    await tail.wait_for(INVOICE_JOBS_DROPPED.name, job_id=during["job_id"])
    await _lift(producer, db, customer, space, missed_invoices="waive")
    after = builders.invoice_job(customer, space)
    await send(producer, INVOICE_JOBS.name, customer, after)
    await tail.wait_for(INVOICE_JOBS_ACCEPTED.name, job_id=after["job_id"])
    decisions = {r["job_id"]: r["status"] for r in await db.fetch(
        "SELECT job_id, status FROM invoice_decisions WHERE customer_id = $1", customer)}
    assert decisions == {before["job_id"]: "accepted", during["job_id"]: "waived", after["job_id"]: "accepted"}


async def test_duplicate_jobs_get_one_decision(workers: WorkerProcess, producer: AIOKafkaProducer,
                                               tail: TopicTail, db: asyncpg.Pool) -> None:
    space, customer = uid("space"), uid("cust")
    job = builders.invoice_job(customer, space)
    for _ in range(3):
        await send(producer, INVOICE_JOBS.name, customer, job)
    await tail.wait_for(INVOICE_JOBS_ACCEPTED.name, job_id=job["job_id"])
    await _suspend(producer, db, customer, space)
    await send(producer, INVOICE_JOBS.name, customer, job)  # redelivered after the suspension: still accepted once
    # Markers behind the copies on the invoice.jobs partition, one per output topic, each published by the
    # billing consumer after whatever it published for the copies before it: one dropped while suspended...
    dropped_marker = builders.invoice_job(customer, space)
    await send(producer, INVOICE_JOBS.name, customer, dropped_marker)
    await tail.wait_for(INVOICE_JOBS_DROPPED.name, job_id=dropped_marker["job_id"])
    assert tail.matching(INVOICE_JOBS_DROPPED.name, job_id=job["job_id"]) == []
    # ...and one accepted once the customer is lifted (waived: nothing rebilled on the way).
    await _lift(producer, db, customer, space, missed_invoices="waive")
    accepted_marker = builders.invoice_job(customer, space)
    await send(producer, INVOICE_JOBS.name, customer, accepted_marker)
    await tail.wait_for(INVOICE_JOBS_ACCEPTED.name, job_id=accepted_marker["job_id"])
    # Each copy would have published a record of its own: one accepted record for the four copies.
    assert [(r["job_id"], r["rebilled"]) for r in tail.matching(INVOICE_JOBS_ACCEPTED.name, customer_id=customer)] == [
        (job["job_id"], False), (accepted_marker["job_id"], False)]
    # The first decision stands: the copy after the suspension did not turn it into a drop.
    row = await db.fetchrow("SELECT status, suspension_version FROM invoice_decisions WHERE job_id = $1",
                            job["job_id"])
    assert (row["status"], row["suspension_version"]) == ("accepted", None)


@pytest.mark.parametrize(
    ("change", "error_part"),
    [
        ({"amount": None}, "amount"),
        ({"amount": "12,50"}, "amount: String should match pattern"),
        ({"period_start": "2026-13-45"}, "period_start"),
        ({"currency": "euro"}, "currency: String should match pattern"),
        ({"period_start": "2026-12-31", "period_end": "2026-12-01"}, "period_end is before period_start"),
    ],
)
async def test_bad_jobs_go_to_deadletter(workers: WorkerProcess, producer: AIOKafkaProducer, tail: TopicTail,
                                         db: asyncpg.Pool, change: dict, error_part: str) -> None:
    space, customer = uid("space"), uid("cust")
    job = builders.invoice_job(customer, space) | change
    job = {k: v for k, v in job.items() if v is not None}
    await send(producer, INVOICE_JOBS.name, customer, job)
    [letter] = await tail.wait_for(DEADLETTER.name, key=customer)
    assert letter["source_topic"] == INVOICE_JOBS.name and letter["worker"] == "billing"
    assert error_part in letter["error"]
    assert await db.fetchval("SELECT count(*) FROM invoice_decisions WHERE customer_id = $1", customer) == 0


async def test_billing_dropped_report(settings: Settings, workers: WorkerProcess, producer: AIOKafkaProducer,
                                      tail: TopicTail, db: asyncpg.Pool) -> None:
    space = uid("space")
    waived_customer, billed_customer, still = uid("cust"), uid("cust"), uid("cust")
    for customer in (waived_customer, billed_customer, still):
        await _suspend(producer, db, customer, space)
        for amount, currency in (("10.00", "EUR"), ("5.25", "EUR"), ("7.00", "USD")):
            job = builders.invoice_job(customer, space, amount=amount, currency=currency)
            await send(producer, INVOICE_JOBS.name, customer, job)
        await tail.wait_for(INVOICE_JOBS_DROPPED.name, count=3, customer_id=customer)
    await _lift(producer, db, waived_customer, space, missed_invoices="waive")
    await _lift(producer, db, billed_customer, space)

    result = run_cli(settings, "billing", "dropped", "--space", space, "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert len(report["jobs"]) == 9
    totals = {(t["status"], t["currency"]): (t["jobs"], t["total"]) for t in report["totals"]}
    assert totals == {
        ("dropped", "EUR"): (2, "15.25"), ("dropped", "USD"): (1, "7.00"),
        ("rebilled", "EUR"): (2, "15.25"), ("rebilled", "USD"): (1, "7.00"),
        ("waived", "EUR"): (2, "15.25"), ("waived", "USD"): (1, "7.00"),
    }
    only_one = json.loads(run_cli(settings, "billing", "dropped", "--customer", still, "--json").stdout)
    assert {j["status"] for j in only_one["jobs"]} == {"dropped"} and len(only_one["jobs"]) == 3
    human = run_cli(settings, "billing", "dropped", "--space", space)
    assert human.returncode == 0 and "waived" in human.stdout and "15.25" in human.stdout


async def test_every_invoice_record_out_is_a_valid_contract_record(
    workers: WorkerProcess, producer: AIOKafkaProducer, tail: TopicTail, db: asyncpg.Pool
) -> None:
    """Accepted, dropped and rebilled jobs are the job as received plus the decision's fields: each one the
    contract's model (AcceptedInvoiceJob, DroppedInvoiceJob) decodes, unknown fields kept."""
    space, customer = uid("space"), uid("cust")
    accepted_job = builders.invoice_job(customer, space) | {"po_number": "PO-7"}
    await send(producer, INVOICE_JOBS.name, customer, accepted_job)
    await tail.wait_for(INVOICE_JOBS_ACCEPTED.name, job_id=accepted_job["job_id"])
    await _suspend(producer, db, customer, space)
    dropped_job = builders.invoice_job(customer, space) | {"po_number": "PO-8"}
    await send(producer, INVOICE_JOBS.name, customer, dropped_job)
    await tail.wait_for(INVOICE_JOBS_DROPPED.name, job_id=dropped_job["job_id"])
    await _lift(producer, db, customer, space)
    await tail.wait_for(INVOICE_JOBS_ACCEPTED.name, job_id=dropped_job["job_id"], rebilled=True)

    checked = 0
    for topic, model in ((INVOICE_JOBS_ACCEPTED.name, AcceptedInvoiceJob), (INVOICE_JOBS_DROPPED.name,
                                                                              DroppedInvoiceJob)):
        for _, _, value, raw, _ in [record for record in tail.records if record[0] == topic]:
            decode(model, raw)  # every record seen on the topic in this session, not only this test's
            checked += 1
            if value is not None and value["customer_id"] == customer:
                assert value["po_number"] in ("PO-7", "PO-8")
    assert checked >= 3
