"""Typed records of the wire contract (docs/contract.md) and their JSON codec: the lowest layer."""

from models.base import (
    ID_MAX_LENGTH,
    TEXT_MAX_LENGTH,
    ContractModel,
    DecodeError,
    decode,
    describe_invalid,
    encode,
    utc_iso,
)
from models.commands import Action, Cause, MissedInvoices, Reason, Source, SuspensionCommand
from models.deadletter import DeadLetter
from models.events import CrmOpportunityEvent, CustomerProfile, CustomerSignup, PlanChange
from models.invoices import AcceptedInvoiceJob, DroppedInvoiceJob, InvoiceJob
from models.lifecycle import EventType, LifecycleEvent, encode_lifecycle_event, event_id_for
from models.overdue import InvoiceStatus, InvoiceStatusKind, OverdueSetting
from models.settings_records import CrmStageSetting, PlanSetting, SignupSetting, SpaceSetting
from models.state import STATE_FIELDS, CustomerState, ScheduledAction, ScheduledEntry, SuspensionState, encode_state

__all__ = [
    "ID_MAX_LENGTH",
    "STATE_FIELDS",
    "TEXT_MAX_LENGTH",
    "CustomerState",
    "AcceptedInvoiceJob",
    "Action",
    "Cause",
    "ContractModel",
    "CrmOpportunityEvent",
    "CrmStageSetting",
    "CustomerProfile",
    "CustomerSignup",
    "DeadLetter",
    "DecodeError",
    "DroppedInvoiceJob",
    "EventType",
    "InvoiceJob",
    "InvoiceStatus",
    "InvoiceStatusKind",
    "LifecycleEvent",
    "MissedInvoices",
    "OverdueSetting",
    "PlanChange",
    "PlanSetting",
    "Reason",
    "ScheduledAction",
    "ScheduledEntry",
    "SignupSetting",
    "Source",
    "SpaceSetting",
    "SuspensionCommand",
    "SuspensionState",
    "decode",
    "describe_invalid",
    "encode",
    "encode_lifecycle_event",
    "encode_state",
    "event_id_for",
    "utc_iso",
]
