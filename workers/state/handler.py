"""Applies a batch of suspension commands: state, history, processed ids and outbox, one transaction."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime

import asyncpg
import orjson
from aiokafka.structs import ConsumerRecord

from models import Action, DecodeError, MissedInvoices, SuspensionCommand, decode, encode
from suspensions.db import repository
from suspensions.db.repository import HistoryRow, OutboxRecord
from suspensions.metrics import Metrics
from topics import INVOICE_JOBS_ACCEPTED, SUSPENSION_COMMANDS, SUSPENSION_STATE
from workers.deadletters import check_customer_key, dead_letter_record
from workers.state.transitions import Applied, Outcome, plan_batch

log = logging.getLogger(__name__)


class StateHandler:
    worker = "state"
    source_topic = SUSPENSION_COMMANDS.name

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    async def handle(self, conn: asyncpg.Connection, records: Sequence[ConsumerRecord]) -> list[OutboxRecord]:
        now = datetime.now(UTC)
        outputs: dict[int, list[OutboxRecord]] = {}
        commands: list[tuple[int, SuspensionCommand]] = []
        for position, record in enumerate(records):
            try:
                command = decode(SuspensionCommand, record.value)
                key_error = check_customer_key(record.key, command.customer_id)
                if key_error:
                    raise DecodeError(key_error)
            except DecodeError as error:
                outputs[position] = [dead_letter_record(record, str(error), self.worker, self.metrics)]
                continue
            commands.append((position, command))

        stored = await repository.lock_states(conn, (c.customer_id for _, c in commands))
        processed = await repository.processed_among(conn, (c.command_id for _, c in commands))
        plan = plan_batch(stored, processed, commands, now)

        history: list[HistoryRow] = []
        outcomes: list[tuple[str, str]] = []
        for applied in plan.applied:
            record = records[applied.position]
            outputs[applied.position] = await self._effects(conn, applied, record, now, history, outcomes)

        await repository.upsert_states(conn, list(plan.final_states.values()))
        await repository.insert_history(conn, history)
        await repository.mark_processed(conn, outcomes, now)
        return [out for position in sorted(outputs) for out in outputs[position]]

    async def _effects(
        self,
        conn: asyncpg.Connection,
        applied: Applied,
        record: ConsumerRecord,
        now: datetime,
        history: list[HistoryRow],
        outcomes: list[tuple[str, str]],
    ) -> list[OutboxRecord]:
        command, transition = applied.command, applied.transition
        labels = {"action": command.action.value, "reason": command.reason.value}
        if transition.outcome is Outcome.DUPLICATE:
            self.metrics.commands_duplicate.inc()
            return []
        outcomes.append((command.command_id, transition.outcome.value))
        if transition.outcome is Outcome.REJECTED:
            return [dead_letter_record(record, transition.error or "rejected", self.worker, self.metrics)]

        state = transition.state
        history.append(HistoryRow(
            command_id=command.command_id, customer_id=command.customer_id, space_id=command.space_id,
            action=command.action.value, reason=command.reason.value, actor=command.actor, note=command.note,
            cause_topic=command.cause.topic if command.cause else None,
            cause_event_id=command.cause.event_id if command.cause else None,
            missed_invoices=(command.missed_invoices_or_default.value if command.action is Action.LIFT else None),
            issued_at=command.issued_at, applied_at=now, outcome=transition.outcome.value,
            version_after=state.version if state else 0,
            source_partition=record.partition, source_offset=record.offset,
        ))
        if transition.outcome is Outcome.NOOP:
            self.metrics.commands_noop.labels(**labels).inc()
            return []

        assert state is not None
        self.metrics.commands_applied.labels(**labels).inc()
        log.debug("state changed", extra={"command_id": command.command_id, "customer_id": command.customer_id,
                                         "action": command.action.value, "version": state.version,
                                         "topic": record.topic, "partition": record.partition,
                                         "offset": record.offset})
        out = [OutboxRecord(
            topic=SUSPENSION_STATE.name, key=command.customer_id.encode(), value=encode(state.to_record()),
            record_id=f"{command.customer_id}:{state.version}", source_partition=record.partition,
            event_time=command.issued_at.timestamp(),
        )]
        if transition.settle_missed_invoices is not None:
            out.extend(await self._settle_missed(conn, command, transition.settle_missed_invoices, record, now))
        return out

    async def _settle_missed(
        self, conn: asyncpg.Connection, command: SuspensionCommand, mode: MissedInvoices,
        record: ConsumerRecord, now: datetime,
    ) -> list[OutboxRecord]:
        status = "rebilled" if mode is MissedInvoices.BILL else "waived"
        jobs = await repository.settle_dropped_jobs(conn, command.customer_id, status, command.command_id, now)
        self.metrics.invoice_jobs.labels(decision=status).inc(len(jobs))
        if mode is MissedInvoices.WAIVE:
            return []
        rebilled = []
        for job_text in jobs:
            job = orjson.loads(job_text)
            job["rebilled"] = True
            rebilled.append(OutboxRecord(
                topic=INVOICE_JOBS_ACCEPTED.name, key=command.customer_id.encode(), value=orjson.dumps(job),
                record_id=f"{job['job_id']}:rebilled", source_partition=record.partition,
            ))
        return rebilled
