"""Typed records of the wire contract (docs/contract.md) and their JSON codec: the lowest layer."""

from models.base import ID_MAX_LENGTH, TEXT_MAX_LENGTH, ContractModel, DecodeError, decode, encode, utc_iso
from models.commands import Action, Cause, MissedInvoices, Reason, SuspensionCommand
from models.deadletter import DeadLetter
from models.events import CrmOpportunityEvent, CustomerSignup, PlanChange
from models.invoices import AcceptedInvoiceJob, DroppedInvoiceJob, InvoiceJob
from models.settings_records import CrmStageSetting, PlanSetting, SignupSetting
from models.state import STATE_FIELDS, CustomerState, SuspensionState, encode_state

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
    "CustomerSignup",
    "DeadLetter",
    "DecodeError",
    "DroppedInvoiceJob",
    "InvoiceJob",
    "MissedInvoices",
    "PlanChange",
    "PlanSetting",
    "Reason",
    "SignupSetting",
    "SuspensionCommand",
    "SuspensionState",
    "decode",
    "encode",
    "encode_state",
    "utc_iso",
]
