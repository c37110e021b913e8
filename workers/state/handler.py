"""Applies a batch of suspension commands: state, history, processed ids and outbox, one transaction."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime

import asyncpg
import orjson
from aiokafka.structs import ConsumerRecord

from models import Action, CustomerState, MissedInvoices, SuspensionCommand, encode_state
from topics import INVOICE_JOBS_ACCEPTED, SUSPENSION_STATE
from workers.runtime.db import repository
from workers.runtime.db.repository import HistoryRow
from workers.runtime.deadletters import dead_letter, decode_customer_records
from workers.runtime.metrics import Metrics
from workers.runtime.publishing import OutgoingRecord
from workers.state.transitions import Applied, Outcome, plan_batch

log = logging.getLogger(__name__)


class StateHandler:
    def __init__(self, worker: str, metrics: Metrics) -> None:
        self.worker = worker
        self.metrics = metrics

    async def handle(self, conn: asyncpg.Connection, records: Sequence[ConsumerRecord]) -> list[OutgoingRecord]:
        now = datetime.now(UTC)
        commands, outputs = decode_customer_records(records, SuspensionCommand, self.worker, self.metrics)

        stored = await repository.lock_states(conn, (c.customer_id for _, c in commands))
        processed = await repository.processed_among(conn, (c.command_id for _, c in commands))
        plan = plan_batch(stored, processed, commands, now)

        history: list[HistoryRow] = []
        outcomes: list[tuple[str, str]] = []
        counts: Counter[tuple[Outcome, str, str]] = Counter()
        settlements: dict[str, Applied] = {}  # the first lift that ended each customer's suspension
        for applied in plan.applied:
            command, transition = applied.command, applied.transition
            record = records[applied.position]
            counts[(transition.outcome, command.action, command.reason)] += 1
            if transition.outcome is Outcome.DUPLICATE:
                continue
            outcomes.append((command.command_id, transition.outcome))
            if transition.outcome is Outcome.REJECTED:
                outputs[applied.position] = [
                    dead_letter(record, transition.error or "rejected", self.worker, self.metrics)]
                continue
            history.append(history_row(command, transition.outcome, transition.state, record, now))
            if transition.outcome is Outcome.CHANGED:
                state = transition.state
                assert state is not None
                outputs[applied.position] = [OutgoingRecord(
                    topic=SUSPENSION_STATE.name, key=record.key, value=encode_state(state),
                    record_id=f"{state.customer_id}:{state.version}", source_partition=record.partition,
                    event_time=command.issued_at.timestamp(),
                )]
                if transition.settle_missed_invoices is not None:
                    settlements.setdefault(command.customer_id, applied)

        if settlements:
            for customer_id, jobs in (await self._settle_missed(conn, settlements, now)).items():
                applied = settlements[customer_id]
                outputs[applied.position].extend(
                    rebilled_record(job, records[applied.position]) for job in jobs)

        await repository.write_applied(conn, list(plan.final_states.values()), history, outcomes, now)
        self._count(counts)
        return [out for position in sorted(outputs) for out in outputs[position]]

    async def _settle_missed(
        self, conn: asyncpg.Connection, settlements: dict[str, Applied], now: datetime
    ) -> dict[str, list[str]]:
        """Rebill or waive, in one statement, the jobs dropped during the suspensions these lifts ended."""
        modes = {
            customer_id: ("rebilled" if applied.transition.settle_missed_invoices is MissedInvoices.BILL
                          else "waived", applied.command.command_id)
            for customer_id, applied in settlements.items()
        }
        settled = await repository.settle_dropped_jobs(conn, modes, now)
        to_bill: dict[str, list[str]] = {}
        for customer_id, jobs in settled.items():
            status = modes[customer_id][0]
            self.metrics.invoice_jobs.labels(decision=status).inc(len(jobs))
            if status == "rebilled":
                to_bill[customer_id] = jobs
        return to_bill

    def _count(self, counts: Counter[tuple[Outcome, str, str]]) -> None:
        for (outcome, action, reason), count in counts.items():
            if outcome is Outcome.CHANGED:
                self.metrics.commands_applied.labels(action=action, reason=reason).inc(count)
            elif outcome is Outcome.NOOP:
                self.metrics.commands_noop.labels(action=action, reason=reason).inc(count)
            elif outcome is Outcome.DUPLICATE:
                self.metrics.commands_duplicate.inc(count)


def history_row(command: SuspensionCommand, outcome: Outcome, state: CustomerState | None,
                record: ConsumerRecord, now: datetime) -> HistoryRow:
    return HistoryRow(
        command.command_id, command.customer_id, command.space_id, command.action, command.reason,
        command.actor, command.note,
        command.cause.topic if command.cause else None,
        command.cause.event_id if command.cause else None,
        command.missed_invoices_or_default if command.action is Action.LIFT else None,
        command.issued_at, now, outcome, state.version if state else 0, record.partition, record.offset,
    )


def rebilled_record(job_text: str, record: ConsumerRecord) -> OutgoingRecord:
    job = orjson.loads(job_text)
    job["rebilled"] = True
    return OutgoingRecord(topic=INVOICE_JOBS_ACCEPTED.name, key=record.key, value=orjson.dumps(job),
                        record_id=f"{job['job_id']}:rebilled", source_partition=record.partition)
