"""The pure decisions of disaster recovery: no broker, no database, tested alone (tests/unit/test_recovery_plan.py).

- ``classify``: how a customer's row in PostgreSQL differs from its latest record on `suspension.state`.
- ``parse_state``, ``latest_states``: what a state record becomes in ``customer_state`` (the record's own JSON:
  its fields are the table's columns), the highest version of each customer in a batch.
- ``parse_event``, ``history_from_event``: what a lifecycle event becomes in ``command_history`` and
  ``processed_commands``, and which of its fields are not known from the event.
- ``outbox_decision``: what to do with an outbox row of the state worker left in a restored backup.
- ``resume_offset``: where the state worker's group resumes on `suspension.commands`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

import orjson

from models import SuspensionCommand, decode
from topics import SUSPENSION_EVENTS, SUSPENSION_STATE
from workers.runtime.db.repository import HistoryRow
from workers.runtime.publishing import OutgoingRecord

# A history row rebuilt from an event does not know where its command was read from.
UNKNOWN_POSITION = -1


# --- db check --------------------------------------------------------------------------------------------


class Kind(StrEnum):
    MISSING_IN_DATABASE = "missing_in_database"  # on the topic, no row in customer_state
    MISSING_ON_TOPIC = "missing_on_topic"  # a row in customer_state, no record on the topic
    OLDER = "older"  # the row's version is below the topic's: the database is behind (an old restore)
    NEWER = "newer"  # the row's version is above the topic's: not published yet (the outbox), or lost from it


@dataclass(frozen=True, slots=True)
class Difference:
    customer_id: str
    kind: Kind
    database_version: int | None
    topic_version: int | None


def classify(customer_id: str, database_version: int | None, topic_version: int | None) -> Difference | None:
    """How the row differs from the topic's latest record of the customer; None when they agree. Versions
    say it all: a version is one change of one customer, made once and published as it was made (the
    contract: "apply a record only when its version is higher than the one you hold")."""
    if database_version == topic_version:
        return None
    if database_version is None:
        kind = Kind.MISSING_IN_DATABASE
    elif topic_version is None:
        kind = Kind.MISSING_ON_TOPIC
    else:
        kind = Kind.OLDER if database_version < topic_version else Kind.NEWER
    return Difference(customer_id, kind, database_version, topic_version)


def count_by_kind(differences: Iterable[Difference]) -> dict[str, int]:
    counts = {kind.value: 0 for kind in Kind}
    for difference in differences:
        counts[difference.kind.value] += 1
    return counts


# --- suspension.state -> customer_state ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TopicState:
    """One `suspension.state` record: its customer, version, JSON value (written as it is: the contract's
    fields are the table's columns) and pending schedules' count."""

    customer_id: str
    version: int
    value: bytes
    schedules: int
    last_command_id: str | None = None  # the command of its last change (where the group resumes, in a scan)


def parse_state(key: bytes | None, value: bytes | None) -> TopicState | None:
    """The record, or None for one that is not a state: a null value (the contract has no tombstones on
    this topic: a customer is never forgotten there, only its name and email in the directory), text that
    is not JSON, or a record without a customer, a positive version or its key. Such records are counted
    and skipped, never written; PostgreSQL checks the other columns' types when the batch is written."""
    if value is None:
        return None
    try:
        fields = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(fields, dict):
        return None
    customer_id, version = fields.get("customer_id"), fields.get("version")
    if not isinstance(customer_id, str) or not customer_id or not isinstance(version, int) or version < 1:
        return None
    if not isinstance(fields.get("space_id"), str) or (key is not None and key != customer_id.encode()):
        return None
    scheduled = fields.get("scheduled") or []
    last_command_id = fields.get("last_command_id")
    return TopicState(customer_id, version, value, len(scheduled) if isinstance(scheduled, list) else 0,
                      last_command_id if isinstance(last_command_id, str) else None)


def latest_states(states: Iterable[TopicState]) -> list[TopicState]:
    """The highest version of each customer among these records (a topic not compacted yet holds every
    version; one statement may not update a row twice)."""
    latest: dict[str, TopicState] = {}
    for state in states:
        held = latest.get(state.customer_id)
        if held is None or state.version > held.version:
            latest[state.customer_id] = state
    return list(latest.values())


# --- suspension.events -> command_history, processed_commands ---------------------------------------------


def parse_event(value: bytes | None) -> dict[str, Any] | None:
    """A lifecycle event's fields, or None for a record that is not one (counted and skipped)."""
    if value is None:
        return None
    try:
        event = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(event, dict):
        return None
    text_fields = ("event_id", "type", "occurred_at", "space_id", "customer_id", "actor", "command_id")
    if not all(isinstance(event.get(name), str) and event[name] for name in text_fields):
        return None
    if not isinstance(event.get("version"), int) or event["version"] < 1:
        return None
    if not isinstance(event.get("reasons_before"), list) or not isinstance(event.get("reasons_after"), list):
        return None
    try:
        datetime.fromisoformat(event["occurred_at"])
    except ValueError:
        return None
    return event


def _command_of(event: dict[str, Any]) -> tuple[str, str]:
    """The action and reason of the command that made the change. Events carry the reasons before and after
    and the source, not the command: the reason a change added or removed is the command's; a lift, a
    scheduling, a cancellation or a fired schedule is read as the operators send them (reason `manual`), a
    lift by the overdue rule as its `release` of `overdue`."""
    before, after = event["reasons_before"], event["reasons_after"]
    added = [reason for reason in after if reason not in before]
    removed = [reason for reason in before if reason not in after]
    schedules = event.get("schedules") or []
    kind = event["type"]
    if kind == "admitted":
        return "register", "signup"
    if kind in ("suspended", "reason_added"):
        return "suspend", added[0] if added else "manual"
    if kind == "reason_removed":
        return "release", removed[0] if removed else "manual"
    if kind == "lifted":
        return ("release", "overdue") if event.get("source") == "overdue_rule" else ("lift", "manual")
    if kind == "suspension_scheduled":
        return "suspend", "manual"
    if kind == "lift_scheduled":
        return "lift", "manual"
    if kind == "schedule_cancelled":
        return "cancel_schedule", "manual"
    action = schedules[0].get("action") if schedules and isinstance(schedules[0], dict) else None
    return (action if isinstance(action, str) else "suspend"), "manual"


def _moment(text: object) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


def history_from_event(event: dict[str, Any]) -> HistoryRow:
    """The ``command_history`` row of the change an event records (outcome `changed`).

    What the event says is kept as it is (command id, customer, space, actor, note, cause, missed invoices,
    version, whether still suspended, the schedule fired or cancelled and its delay). What it does not say
    is filled as documented in docs/operations.md ("Disaster recovery"): action and reason are read from the
    type and the reasons (``_command_of``), a lift's missed invoices from the event or its schedule; ``issued_at`` is the moment the change was applied (the command's
    own moment is not on the event); ``source_partition`` and ``source_offset`` are -1 (unknown); ``until_at``
    is null. No-ops never make an event: their history rows are not rebuilt.
    """
    action, reason = _command_of(event)
    applied_at = datetime.fromisoformat(event["occurred_at"])
    cause = event.get("cause") if isinstance(event.get("cause"), dict) else None
    schedules = [entry for entry in (event.get("schedules") or []) if isinstance(entry, dict)]
    first = schedules[0] if schedules else None
    kind = event["type"]
    ended = kind in ("schedule_cancelled", "schedule_fired") or event.get("fired_delay_ms") is not None
    scheduled = kind in ("suspension_scheduled", "lift_scheduled")
    return HistoryRow(
        command_id=event["command_id"], customer_id=event["customer_id"], space_id=event["space_id"],
        action=action, reason=reason, actor=event["actor"], note=event.get("note"),
        cause_topic=cause.get("topic") if cause else None, cause_event_id=cause.get("event_id") if cause else None,
        missed_invoices=_missed_invoices(event, action, first), issued_at=applied_at, applied_at=applied_at,
        outcome="changed", version_after=event["version"], source_partition=UNKNOWN_POSITION,
        source_offset=UNKNOWN_POSITION,
        schedule_id=first.get("schedule_id") if first is not None and ended else None,
        scheduled_at=_moment(first.get("at")) if first is not None and scheduled else None,
        until_at=None, fired_delay_ms=event.get("fired_delay_ms"),
        suspended_after=bool(event["reasons_after"]),
    )


def _missed_invoices(event: dict[str, Any], action: str, schedule: dict[str, Any] | None) -> str | None:
    """A lift's or a release's choice for the missed invoices, as the worker records it: the event's (a lift
    that ended a suspension), else the schedule's (a lift scheduled or fired), else the default, `bill`."""
    if action not in ("lift", "release"):
        return None
    missed = event.get("missed_invoices") or (schedule.get("missed_invoices") if schedule is not None else None)
    return missed if isinstance(missed, str) else "bill"


def unique_events(events: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """One event per change (customer and version) in a batch: an event published twice (at least once)
    is one history row."""
    seen: dict[tuple[str, int], dict[str, Any]] = {}
    for event in events:
        seen.setdefault((event["customer_id"], event["version"]), event)
    return list(seen.values())


# --- the outbox of a restored backup ---------------------------------------------------------------------


class Fate(StrEnum):
    KEEP = "keep"  # not on the topic yet: the state worker publishes it when it starts
    DELETE = "delete"  # on the topic already, or superseded there: publishing it again would go backwards
    TRIM = "trim"  # some of it superseded: rewritten with the rest


@dataclass(frozen=True)
class OutboxDecision:
    fate: Fate
    records: list[OutgoingRecord]  # what the row holds afterwards (TRIM), else the row's records


def change_of(record: OutgoingRecord) -> tuple[str, int] | None:
    """(customer, version) of a state record or a lifecycle event; None for the row's other records (a
    rebilled invoice job, a dead letter)."""
    if record.topic not in (SUSPENSION_STATE.name, SUSPENSION_EVENTS.name):
        return None
    try:
        fields = orjson.loads(record.value)
    except orjson.JSONDecodeError:
        return None
    if isinstance(fields, dict) and isinstance(fields.get("customer_id"), str) and isinstance(fields.get("version"), int):
        return fields["customer_id"], fields["version"]
    return None


def outbox_decision(records: Sequence[OutgoingRecord], topic_versions: Mapping[str, int]) -> OutboxDecision:
    """What to do with one outbox row of the state worker after its database came back from an old backup.

    The row was written with the batch that made its changes; the worker publishes a row's records
    together, in order, before its partition's next batch, and deletes the row afterwards (lazily: a row
    can outlive its publication). A change whose version the topic holds, or holds a later one of, was
    published: sent again, a state record would put an older state on the compacted topic after a newer
    one (compaction keeps the last written, and readers that apply "higher versions only" would still see
    it go by). So such state records and events go; a row with none left is deleted. A change above the
    topic's version was never published: kept, and the state worker publishes it when it starts (the row's
    other records, a rebilled job or a dead letter, stay with it: readers deduplicate them by record id).
    A row holding no change at all (a dead letter alone) is kept for the same reason.
    """
    changes = [(record, change_of(record)) for record in records]
    stale = [record for record, change in changes
             if change is not None and topic_versions.get(change[0], 0) >= change[1]]
    if not stale:
        return OutboxDecision(Fate.KEEP, list(records))
    fresh = [record for record, change in changes
             if change is not None and topic_versions.get(change[0], 0) < change[1]]
    if not fresh:
        return OutboxDecision(Fate.DELETE, [])
    kept = [record for record, change in changes
            if change is None or topic_versions.get(change[0], 0) < change[1]]
    return OutboxDecision(Fate.TRIM, kept)


def outbox_customers(records: Iterable[OutgoingRecord]) -> set[str]:
    return {change[0] for record in records if (change := change_of(record)) is not None}


# --- the state worker's consumer group -------------------------------------------------------------------


def parse_command_id(value: bytes | None) -> str | None:
    """The id of a `suspension.commands` record as the state worker reads it (its value, decoded as the
    contract's command), or None for a record it dead-letters without recording an id: a corrected copy
    re-sent under the same id is then applied, after a rebuild as before the loss."""
    if value is None:
        return None
    try:
        return decode(SuspensionCommand, value).command_id
    except ValueError:  # pydantic's ValidationError, or JSON that is not a command
        return None


def resume_offset(committed: int | None, log_start: int, last_change: int | None) -> int:
    """Where the state worker's group resumes on one partition of `suspension.commands`.

    ``last_change`` is the offset of the last command there that changed a state (the first copy of a
    command id the rebuilt processed ids hold as `changed`). Every command after it was, when applied, a
    no-op, a duplicate or rejected against the state it left, which is the rebuilt state (the customer's
    later changes would be later commands of the same partition), or was never applied: reading them again
    gives the same no-ops and applies the rest, so resuming just after it is safe. Resuming before it is
    not: a no-op read again against a later state can change it (a `suspend` that was a no-op before a
    lift suspends after it). The committed offset is kept when it is further on: the offsets are committed
    only after the batch's records were published, so everything before it is on the topics already.
    """
    floor = log_start if committed is None else max(committed, log_start)
    return floor if last_change is None else max(floor, last_change + 1)
