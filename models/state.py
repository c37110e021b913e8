"""The suspension state of one customer: the compacted topic's record, and its hot-path value.

``SuspensionState`` is the contract (its fields are the wire format); ``CustomerState``
is the same record as a plain slotted value, cheap to build once or more per command.
``STATE_FIELDS`` is taken from the model, and everything else that lists the state's
fields derives from it: the encoder here, the SQL column lists in the repository.
A unit test holds the value class to the model.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime

import orjson

from models.base import ContractModel, Id, Text
from models.commands import Action, MissedInvoices, Reason


class ScheduledAction(ContractModel):
    """(addition) A suspension or lift waiting for its moment."""

    schedule_id: Id
    action: Action  # suspend or lift
    at: datetime  # UTC
    missed_invoices: MissedInvoices | None = None  # on a lift
    actor: str
    note: Text | None = None


@dataclass(slots=True)
class ScheduledEntry:
    """``ScheduledAction`` as a plain value (the same fields, in the same order)."""

    schedule_id: str
    action: Action
    at: datetime
    missed_invoices: MissedInvoices | None
    actor: str
    note: str | None


class SuspensionState(ContractModel):
    space_id: Id
    customer_id: Id
    suspended: bool
    reasons: list[Reason]
    suspended_at: datetime | None
    lifted_at: datetime | None
    version: int
    updated_at: datetime
    last_command_id: Id
    scheduled: list[ScheduledAction] = []  # (addition) pending schedules, soonest first


STATE_FIELDS: tuple[str, ...] = tuple(SuspensionState.model_fields)


@dataclass(slots=True)
class CustomerState:
    """Never changed after construction, yet not declared frozen: a frozen dataclass costs six
    times as much to build (bench/RESULTS.md)."""

    customer_id: str
    space_id: str
    suspended: bool
    reasons: tuple[Reason, ...]
    suspended_at: datetime | None
    lifted_at: datetime | None
    version: int
    updated_at: datetime
    last_command_id: str
    scheduled: tuple[ScheduledEntry, ...] = ()

    def to_record(self) -> SuspensionState:
        return SuspensionState.model_validate(
            {name: getattr(self, name) for name in STATE_FIELDS}
            | {"reasons": list(self.reasons), "scheduled": [dataclasses.asdict(entry) for entry in self.scheduled]}
        )


def encode_state(state: CustomerState) -> bytes:
    """The ``suspension.state`` record as ``SuspensionState`` would encode it, without building the
    model per record on the hot path (a unit test holds the two encodings equal)."""
    return orjson.dumps({name: getattr(state, name) for name in STATE_FIELDS}, option=orjson.OPT_UTC_Z)
