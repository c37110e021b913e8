"""Decides a batch of invoice jobs against the suspension state committed in PostgreSQL.

The state rows are read ``FOR SHARE``: a lift (which locks them ``FOR UPDATE``
and settles the dropped jobs) either sees this batch's drops or runs before it. Two owners of a
source partition at once take turns (the unit of work's partition lock), so the second finds the first's decisions
and publishes none of them again.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime

from aiokafka.structs import ConsumerRecord

from models import InvoiceJob, utc_iso
from models.invoices import accepted_job_value, dropped_job_value
from topics import INVOICE_JOBS_ACCEPTED, INVOICE_JOBS_DROPPED
from workers.billing.decisions import Decision, decide
from workers.runtime.db.repository import DecisionRow
from workers.runtime.db.unit_of_work import BatchStore
from workers.runtime.deadletters import dead_letter, decode_customer_records
from workers.runtime.metrics import Metrics
from workers.runtime.publishing import OutgoingRecord


class BillingHandler:
    def __init__(self, worker: str, metrics: Metrics) -> None:
        self.worker = worker
        self.metrics = metrics

    async def handle(self, store: BatchStore, records: Sequence[ConsumerRecord]) -> list[OutgoingRecord]:
        now = datetime.now(UTC)
        decoded, dead = decode_customer_records(records, InvoiceJob, self.worker, self.metrics)
        out: list[OutgoingRecord] = [letter for position in sorted(dead) for letter in dead[position]]
        jobs = [(records[position], job) for position, job in decoded]
        if not jobs:
            return out

        states = await store.lock_states((job.customer_id for _, job in jobs), share=True)
        decided = await store.decided_jobs((job.job_id for _, job in jobs))
        rows: list[DecisionRow] = []
        counts: Counter[str] = Counter()
        for record, job in jobs:
            verdict = decide(job, states.get(job.customer_id), job.job_id in decided)
            counts[verdict.decision.value] += 1
            if verdict.decision is Decision.DUPLICATE:
                continue
            if verdict.decision is Decision.REJECTED:
                out.append(dead_letter(record, verdict.error or "rejected", self.worker, self.metrics))
                continue
            decided.add(job.job_id)
            job_text = record.value.decode("utf-8")
            rows.append(DecisionRow(
                job_id=job.job_id, customer_id=job.customer_id, space_id=job.space_id,
                contract_id=job.contract_id, amount=job.amount, currency=job.currency,
                status=verdict.decision.value, suspension_version=verdict.suspension_version,
                job=job_text, decided_at=now,
            ))
            if verdict.decision is Decision.ACCEPTED:
                topic, value = INVOICE_JOBS_ACCEPTED.name, accepted_job_value(job_text, rebilled=False)
            else:
                topic = INVOICE_JOBS_DROPPED.name
                value = dropped_job_value(job_text, utc_iso(now), verdict.suspension_version)
            out.append(OutgoingRecord(topic=topic, key=record.key, value=value,
                                    record_id=job.job_id, source_partition=record.partition))
        await store.insert_decisions(rows)
        for decision, count in counts.items():
            self.metrics.invoice_jobs.labels(decision=decision).inc(count)
        return out
