"""Lifecycle events (`suspension.events`): what happened to a customer's suspension, one per change.

The state topic says what is; these say what happened, for integrations that act on a change
(email the member, open a ticket, notify finance). Written in the same transaction as the change
(the outbox), published at least once, in order per customer; ``event_id`` deduplicates.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

import orjson

from models.base import ContractModel, Id, Text, name_based_id
from models.commands import Cause, MissedInvoices, Reason, Source
from models.state import ScheduledAction


class EventType(StrEnum):
    SUSPENDED = "suspended"  # the first reason: the customer is now suspended
    REASON_ADDED = "reason_added"  # suspended already, one more reason
    REASON_REMOVED = "reason_removed"  # (addition) a release: one reason fewer, still suspended
    LIFTED = "lifted"
    ADMITTED = "admitted"  # the first decision for a signup that suspends nothing: not suspended
    SUSPENSION_SCHEDULED = "suspension_scheduled"  # a suspension scheduled, or moved to another moment
    LIFT_SCHEDULED = "lift_scheduled"
    SCHEDULE_CANCELLED = "schedule_cancelled"
    SCHEDULE_FIRED = "schedule_fired"  # a schedule's moment came and its action changed nothing else


class LifecycleEvent(ContractModel):
    event_id: Id
    type: EventType
    occurred_at: datetime
    space_id: Id
    customer_id: Id
    version: int  # the state version this change made
    reasons_before: list[Reason]
    reasons_after: list[Reason]
    actor: str
    source: Source
    command_id: Id
    cause: Cause | None = None
    note: Text | None = None
    missed_invoices: MissedInvoices | None = None  # on a lift
    invoices_billed: list[Id] | None = None  # on a lift: the job ids billed again (missed_invoices=bill)
    invoices_waived: list[Id] | None = None  # on a lift: the job ids waived (missed_invoices=waive)
    schedules: list[ScheduledAction] | None = None  # the schedules this change added, moved, cancelled or fired
    fired_delay_ms: int | None = None  # a change made by a schedule: how long after its moment it applied


EVENT_ID_NAMESPACE = uuid.UUID("0b5f3a52-6a4c-4f7e-9f3e-2f7c1d9e8a41")


def event_id_for(customer_id: str, version: int) -> str:
    """One id per change of a customer's state: a re-published event carries the same id."""
    return name_based_id(EVENT_ID_NAMESPACE, f"{customer_id}:{version}")


def encode_lifecycle_event(fields: dict[str, Any]) -> bytes:
    """A ``LifecycleEvent`` as the model would encode it, from its fields, without building the model on
    the hot path (a unit test holds the two encodings equal)."""
    return orjson.dumps(fields, option=orjson.OPT_UTC_Z)
