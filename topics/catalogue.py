"""Topic name, key, value model and layout, declared once and imported everywhere."""

from __future__ import annotations

from dataclasses import dataclass

from models import (
    AcceptedInvoiceJob,
    ContractModel,
    CrmOpportunityEvent,
    CrmStageSetting,
    CustomerProfile,
    CustomerSignup,
    DeadLetter,
    DroppedInvoiceJob,
    InvoiceJob,
    InvoiceStatus,
    LifecycleEvent,
    OverdueSetting,
    PlanChange,
    PlanSetting,
    SignupSetting,
    SpaceSetting,
    SuspensionCommand,
    SuspensionState,
)


@dataclass(frozen=True)
class TopicSpec:
    name: str
    key: str  # what the record key holds, as the contract names it
    value_model: type[ContractModel]
    compacted: bool = False
    direction: str = "inbound"  # inbound | internal | outbound
    # None: the configured default (SUSPENSIONS_TOPIC_PARTITIONS).
    partitions: int | None = None
    # The header that carries each record's id where the service publishes, for deduplication.
    id_header: str = "record_id"
    # Raised only for a change that breaks readers or writers (docs/contract.md, "Evolution").
    version: int = 1
    # Records carry CloudEvents headers (binary mode of the Kafka protocol binding); the value stays plain.
    cloudevents: bool = False
    # How long the broker keeps its records (None: the broker's default). Declared where a window of the
    # service depends on it: the commands' id deduplication (SUSPENSIONS_DEDUP_RETENTION) is checked against it.
    retention_ms: int | None = None

    def configs(self) -> dict[str, str]:
        configs = {"cleanup.policy": "compact" if self.compacted else "delete"}
        if self.retention_ms is not None:
            configs["retention.ms"] = str(self.retention_ms)
        return configs


CUSTOMER_SIGNUPS = TopicSpec("customer.signups", "customer_id", CustomerSignup)
CUSTOMER_PROFILE = TopicSpec("customer.profile", "customer_id", CustomerProfile)
CUSTOMER_PLAN_CHANGES = TopicSpec("customer.plan-changes", "customer_id", PlanChange)
CRM_OPPORTUNITIES = TopicSpec("crm.opportunities", "customer_id", CrmOpportunityEvent)
SETTINGS_SIGNUP = TopicSpec("settings.signup", "space_id", SignupSetting, compacted=True, partitions=1)
SETTINGS_PLANS = TopicSpec("settings.plans", "plan_id", PlanSetting, compacted=True, partitions=1)
SETTINGS_CRM_STAGES = TopicSpec(
    "settings.crm-stages", "board_id/stage_id", CrmStageSetting, compacted=True, partitions=1
)
SETTINGS_SPACES = TopicSpec("settings.spaces", "space_id", SpaceSetting, compacted=True, partitions=1)
INVOICE_JOBS = TopicSpec("invoice.jobs", "customer_id", InvoiceJob)
INVOICE_STATUS = TopicSpec("invoice.status", "customer_id", InvoiceStatus)
# Read whole by the overdue worker (not by the triggers, which follow SETTINGS_TOPICS).
SETTINGS_OVERDUE = TopicSpec("settings.overdue", "space_id", OverdueSetting, compacted=True, partitions=1)
SUSPENSION_COMMANDS = TopicSpec(
    "suspension.commands", "customer_id", SuspensionCommand, direction="internal", id_header="command_id",
    retention_ms=7 * 24 * 3600 * 1000,  # Kafka's default, stated: the dedup window (8 days) covers it and a day
)
SUSPENSION_STATE = TopicSpec(
    "suspension.state", "customer_id", SuspensionState, compacted=True, direction="outbound", cloudevents=True
)
SUSPENSION_EVENTS = TopicSpec(
    "suspension.events", "customer_id", LifecycleEvent, direction="outbound", cloudevents=True
)
INVOICE_JOBS_ACCEPTED = TopicSpec(
    "invoice.jobs.accepted", "customer_id", AcceptedInvoiceJob, direction="outbound"
)
INVOICE_JOBS_DROPPED = TopicSpec(
    "invoice.jobs.dropped", "customer_id", DroppedInvoiceJob, direction="outbound"
)
DEADLETTER = TopicSpec("deadletter", "original key", DeadLetter, direction="outbound")

SETTINGS_TOPICS = (SETTINGS_SIGNUP, SETTINGS_PLANS, SETTINGS_CRM_STAGES, SETTINGS_SPACES)
ALL_TOPICS: tuple[TopicSpec, ...] = (
    CUSTOMER_SIGNUPS,
    CUSTOMER_PLAN_CHANGES,
    CRM_OPPORTUNITIES,
    CUSTOMER_PROFILE,
    *SETTINGS_TOPICS,
    SETTINGS_OVERDUE,
    INVOICE_JOBS,
    INVOICE_STATUS,
    SUSPENSION_COMMANDS,
    SUSPENSION_STATE,
    SUSPENSION_EVENTS,
    INVOICE_JOBS_ACCEPTED,
    INVOICE_JOBS_DROPPED,
    DEADLETTER,
)


_BY_NAME = {spec.name: spec for spec in ALL_TOPICS}


def by_name(name: str) -> TopicSpec:
    return _BY_NAME[name]
