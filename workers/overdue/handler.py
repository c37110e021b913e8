"""Applies a batch of `invoice.status` records to the customers' invoices, in one unit of work.

A settled invoice that was the customer's last overdue one may release the `overdue` reason: the release
command is written to the outbox in the same transaction as the invoice, so it is published once the
batch commits, whatever crashes in between. The firer takes the same partition lock as a batch, so a
payment and the moment of the same invoice never pass each other.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from aiokafka.structs import ConsumerRecord

from models import InvoiceStatus
from workers.overdue.rule import apply_status
from workers.runtime.db.invoices import InvoiceRow
from workers.runtime.db.unit_of_work import BatchStore
from workers.runtime.deadletters import dead_letter, decode_customer_records
from workers.runtime.metrics import Metrics
from workers.runtime.publishing import OutgoingRecord, command_record


class InvoiceStatusHandler:
    def __init__(self, worker: str, metrics: Metrics) -> None:
        self.worker = worker
        self.metrics = metrics

    async def handle(self, store: BatchStore, records: Sequence[ConsumerRecord]) -> list[OutgoingRecord]:
        events, outputs = decode_customer_records(records, InvoiceStatus, self.worker, self.metrics)
        if not events:
            return [out for position in sorted(outputs) for out in outputs[position]]
        known = await store.invoices_of(event.customer_id for _, event in events)
        settings = await store.rule_settings(event.space_id for _, event in events)
        changed: dict[tuple[str, str], InvoiceRow] = {}
        counts: Counter[str] = Counter()
        for position, event in events:
            record = records[position]
            invoices = known.setdefault(event.customer_id, {})
            outcome = apply_status(invoices, event, record.partition, settings.get(event.space_id))
            if outcome.error is not None:
                outputs[position] = [dead_letter(record, outcome.error, self.worker, self.metrics)]
                continue
            counts[event.status.value if outcome.invoice is not None else "unchanged"] += 1
            if outcome.invoice is not None:
                invoices[event.invoice_id] = outcome.invoice
                changed[(event.customer_id, event.invoice_id)] = outcome.invoice
            if outcome.release is not None:
                outputs[position] = [command_record(outcome.release, record.partition)]
                self.metrics.overdue_commands.labels(action="release").inc()
        await store.write_invoices(list(changed.values()))
        for status, count in counts.items():
            self.metrics.invoice_statuses.labels(status=status).inc(count)
        return [out for position in sorted(outputs) for out in outputs[position]]
