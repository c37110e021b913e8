"""Applies a batch of suspension commands: state, history, processed ids and outbox, one transaction: one
round trip reads (the partition lock, the states, the processed ids), one writes (with the outbox rows)."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime

import orjson
from aiokafka.structs import ConsumerRecord

from models import (
    Action,
    CustomerState,
    EventType,
    MissedInvoices,
    ScheduledEntry,
    SuspensionCommand,
    encode_lifecycle_event,
    encode_state,
    event_id_for,
    utc_iso,
)
from models.invoices import accepted_job_value
from topics import INVOICE_JOBS_ACCEPTED, SUSPENSION_EVENTS, SUSPENSION_STATE
from workers.runtime.db.repository import HistoryRow, ScheduleRow
from workers.runtime.db.unit_of_work import BatchStore
from workers.runtime.deadletters import dead_letter, decode_customer_records
from workers.runtime.metrics import Metrics
from workers.runtime.publishing import OutgoingRecord, cloudevent_headers
from workers.state.transitions import AppliedCommand, Outcome, ScheduleChange, event_type, plan_batch, schedule_change

log = logging.getLogger(__name__)


class StateHandler:
    def __init__(self, worker: str, metrics: Metrics, lifecycle_events: bool = True) -> None:
        self.worker = worker
        self.metrics = metrics
        self.lifecycle_events = lifecycle_events

    async def handle(self, store: BatchStore, records: Sequence[ConsumerRecord]) -> list[OutgoingRecord]:
        now = datetime.now(UTC)
        occurred_at = utc_iso(now)
        commands, outputs = decode_customer_records(records, SuspensionCommand, self.worker, self.metrics)

        stored, processed = await store.read_for_commands((c.customer_id for _, c in commands),
                                                          (c.command_id for _, c in commands))
        plan = plan_batch(stored, processed, commands, now)

        history: list[HistoryRow] = []
        outcomes: list[tuple[str, str]] = []
        counts: Counter[tuple[Outcome, str, str]] = Counter()
        changes: list[tuple[AppliedCommand, ScheduleChange]] = []
        schedules: dict[str, ScheduleRow] = {}  # by id: the last change of each schedule in the batch
        settlements: dict[str, AppliedCommand] = {}  # the first lift that ended each customer's suspension
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
            change = schedule_change(applied, now)
            history.append(history_row(command, transition.outcome, transition.state, record, now,
                                       change.fired_delay_ms))
            if transition.outcome is Outcome.CHANGED:
                state = transition.state
                assert state is not None
                outputs[applied.position] = [state_record(state, record, command.issued_at.timestamp(), now, occurred_at)]
                changes.append((applied, change))
                if change.added or change.ended:
                    schedules.update((row.schedule_id, row) for row in schedule_rows(change, applied, record.partition, now))
                if transition.settle_missed_invoices is not None:
                    settlements.setdefault(command.customer_id, applied)

        settled = await self._settle_missed(store, settlements, now) if settlements else {}
        for applied, change in changes:
            record = records[applied.position]
            customer_id = applied.command.customer_id
            jobs = settled.get(customer_id, ("", []))[1] if settlements.get(customer_id) is applied else []
            if self.lifecycle_events:
                outputs[applied.position].append(lifecycle_record(applied, change, record, occurred_at, jobs))
            if jobs and applied.transition.settle_missed_invoices is MissedInvoices.BILL:
                outputs[applied.position].extend(rebilled_record(job, record) for job in jobs)

        await store.write_applied(list(plan.final_states.values()), history, outcomes, now, list(schedules.values()))
        self._count(counts)
        return [out for position in sorted(outputs) for out in outputs[position]]

    async def _settle_missed(
        self, store: BatchStore, settlements: dict[str, AppliedCommand], now: datetime
    ) -> dict[str, tuple[str, list[str]]]:
        """Rebill or waive, in one statement, the jobs dropped during the suspensions these lifts ended;
        returns each customer's (status, job texts in the order they were dropped)."""
        modes = {
            customer_id: ("rebilled" if applied.transition.settle_missed_invoices is MissedInvoices.BILL
                          else "waived", applied.command.command_id)
            for customer_id, applied in settlements.items()
        }
        settled = await store.settle_dropped_jobs(modes, now)
        for customer_id, jobs in settled.items():
            self.metrics.invoice_jobs.labels(decision=modes[customer_id][0]).inc(len(jobs))
        return {customer_id: (modes[customer_id][0], jobs) for customer_id, jobs in settled.items()}

    def _count(self, counts: Counter[tuple[Outcome, str, str]]) -> None:
        for (outcome, action, reason), count in counts.items():
            if outcome is Outcome.CHANGED:
                self.metrics.commands_applied.labels(action=action, reason=reason).inc(count)
            elif outcome is Outcome.NOOP:
                self.metrics.commands_noop.labels(action=action, reason=reason).inc(count)
            elif outcome is Outcome.DUPLICATE:
                self.metrics.commands_duplicate.inc(count)


def history_row(command: SuspensionCommand, outcome: Outcome, state: CustomerState | None,
                record: ConsumerRecord, now: datetime, fired_delay_ms: int | None = None) -> HistoryRow:
    return HistoryRow(
        command.command_id, command.customer_id, command.space_id, command.action, command.reason,
        command.actor, command.note,
        command.cause.topic if command.cause else None,
        command.cause.event_id if command.cause else None,
        command.missed_invoices_or_default if command.action in (Action.LIFT, Action.RELEASE) else None,
        command.issued_at, now, outcome, state.version if state else 0, record.partition, record.offset,
        command.schedule_id, command.at, command.until, fired_delay_ms, state.suspended if state else None,
    )


def state_record(state: CustomerState, record: ConsumerRecord, event_time: float, now: datetime,
                 now_text: str) -> OutgoingRecord:
    """The ``suspension.state`` record of a change made ``now`` (``now_text``: its contract text, made
    once per batch)."""
    record_id = f"{state.customer_id}:{state.version}"
    updated_at = now_text if state.updated_at is now else utc_iso(state.updated_at)
    return OutgoingRecord(
        topic=SUSPENSION_STATE.name, key=record.key, value=encode_state(state), record_id=record_id,
        source_partition=record.partition, event_time=event_time,
        extra_headers=cloudevent_headers(record_id, STATE_EVENT_TYPE, updated_at, state.customer_id),
    )


STATE_EVENT_TYPE = "suspensions.state"


def schedule_rows(change: ScheduleChange, applied: AppliedCommand, partition: int, now: datetime) -> list[ScheduleRow]:
    """The ``schedules`` rows one applied command writes: its new or moved schedules, pending; the ones it
    fired or cancelled, ended."""
    command = applied.command

    def row(entry: ScheduledEntry, status: str) -> ScheduleRow:
        fired = status == "fired"
        return ScheduleRow(entry.schedule_id, command.customer_id, command.space_id, entry.action, entry.at,
                           entry.missed_invoices, entry.actor, entry.note, partition, status, command.command_id,
                           now, now if fired else None, change.fired_delay_ms if fired else None)

    return ([row(entry, "pending") for entry in change.added]
            + [row(entry, "fired" if entry is change.fired else "cancelled") for entry in change.ended])


def lifecycle_record(applied: AppliedCommand, change: ScheduleChange, record: ConsumerRecord, occurred_at: str,
                     jobs: list[str]) -> OutgoingRecord:
    """The `suspension.events` record of one change (a lift carries the jobs it billed or waived)."""
    command, state, previous = applied.command, applied.transition.state, applied.previous
    assert state is not None
    kind = event_type(command, previous, state, change)
    event_id = event_id_for(state.customer_id, state.version)
    missed = command.missed_invoices_or_default if kind is EventType.LIFTED else None
    job_ids = [orjson.loads(job)["job_id"] for job in jobs] if kind is EventType.LIFTED else None
    value = encode_lifecycle_event({
        "event_id": event_id, "type": kind, "occurred_at": occurred_at, "space_id": state.space_id,
        "customer_id": state.customer_id, "version": state.version,
        "reasons_before": previous.reasons if previous is not None else (), "reasons_after": state.reasons,
        "actor": command.actor, "source": command.source_or_default, "command_id": command.command_id,
        "cause": {"topic": command.cause.topic, "event_id": command.cause.event_id,
                  "invoice_id": command.cause.invoice_id} if command.cause else None,
        "note": command.note, "missed_invoices": missed,
        "invoices_billed": job_ids if missed is MissedInvoices.BILL else None,
        "invoices_waived": job_ids if missed is MissedInvoices.WAIVE else None,
        "schedules": [*change.added, *change.ended] or None,
        "fired_delay_ms": change.fired_delay_ms,
    })
    return OutgoingRecord(
        topic=SUSPENSION_EVENTS.name, key=record.key, value=value, record_id=event_id,
        source_partition=record.partition,
        extra_headers=cloudevent_headers(event_id, f"suspensions.{kind}", occurred_at, state.customer_id),
    )


def rebilled_record(job_text: str, record: ConsumerRecord) -> OutgoingRecord:
    return OutgoingRecord(topic=INVOICE_JOBS_ACCEPTED.name, key=record.key,
                          value=accepted_job_value(job_text, rebilled=True),
                          record_id=f"{orjson.loads(job_text)['job_id']}:rebilled", source_partition=record.partition)
