"""Typed records of the wire contract (../shared/CONTRACT.md) and their JSON codec."""

from models.base import ContractModel, DecodeError, decode, encode
from models.commands import Action, Cause, MissedInvoices, Reason, SuspensionCommand
from models.deadletter import DeadLetter
from models.events import CrmOpportunityEvent, CustomerSignup, PlanChange
from models.invoices import AcceptedInvoiceJob, DroppedInvoiceJob, InvoiceJob
from models.settings_records import CrmStageSetting, PlanSetting, SignupSetting
from models.state import SuspensionState

__all__ = [
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
]
