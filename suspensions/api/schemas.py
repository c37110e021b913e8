"""The operator API's request and response models: they are its OpenAPI document.

Every answer has a model here (or the contract's own, ``SuspensionState``), so a client generated from
``docs/openapi.json`` knows each field's type. Each model says exactly what the answer holds today: no
field is added, and none left out (``tests/unit/test_openapi.py`` checks that every 2xx answer is
typed). The service layer (``service.Operations``) builds them; the console renders the same objects.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from models import TEXT_MAX_LENGTH, Action, MissedInvoices, Reason, SuspensionState
from suspensions.operators import BulkOutcome
from workers.state.transitions import Outcome

# --- customers -----------------------------------------------------------------------------------


class SuspendRequest(BaseModel):
    note: str | None = Field(default=None, max_length=TEXT_MAX_LENGTH)
    at: str | None = Field(default=None, description="Schedule it: ISO 8601 with an offset, or a local date or "
                                                     "date-time read in the space's time zone")
    until: str | None = Field(default=None, description="Also schedule the lift then (same format)")


class LiftRequest(BaseModel):
    note: str | None = Field(default=None, max_length=TEXT_MAX_LENGTH)
    missed_invoices: MissedInvoices = MissedInvoices.BILL
    at: str | None = Field(default=None, description="Schedule it (same format as a suspension's)")


class Accepted(BaseModel):
    command_id: str


class Applied(BaseModel):
    command_id: str
    outcome: Outcome
    state: SuspensionState | None


class CustomerPage(BaseModel):
    customers: list[SuspensionState]
    next_cursor: str | None
    profiles: list[PersonProfile] = Field(default_factory=list,
                                          description="Name and email of those of the page's customers known")


class HistoryEntry(BaseModel):
    """One command applied to the customer (a row of ``command_history``), oldest first."""

    command_id: str
    space_id: str
    action: Action
    reason: Reason
    actor: str
    note: str | None
    cause_topic: str | None = Field(description="The topic of the event a rule acted on (none for a manual one)")
    cause_event_id: str | None
    missed_invoices: MissedInvoices | None
    issued_at: datetime
    applied_at: datetime
    outcome: Literal[Outcome.CHANGED, Outcome.NOOP] = Field(description="A rejected command is not in history")
    version_after: int
    schedule_id: str | None
    scheduled_at: datetime | None
    until_at: datetime | None
    fired_delay_ms: int | None = Field(description="For a scheduled command that fired: how late, in ms")


# --- webhooks (issue 22) ------------------------------------------------------------------------


class WebhookRequest(BaseModel):
    url: str = Field(max_length=2000, description="https, a public address (unless the service allows private "
                                                  "ones: SUSPENSIONS_WEBHOOKS_ALLOW_PRIVATE)")
    events: list[str] = Field(default_factory=list, description="Lifecycle event types to send (`suspended` or "
                                                                "`suspension.suspended`); every type when empty")
    description: str | None = Field(default=None, max_length=500)


class WebhookCreated(BaseModel):
    """The new endpoint and its signing secret: the only answer that shows the secret."""

    id: str
    secret: str = Field(description="whsec_ and the key in base64 (Standard Webhooks)")
    url: str
    space_id: str
    events: list[str]


class WebhookEndpoint(BaseModel):
    """An endpoint and its health (never its secret)."""

    id: str
    space_id: str
    url: str
    description: str | None
    events: list[str] = Field(description="Empty: every type")
    enabled: bool
    health: Literal["ok", "failing", "disabled"]
    disabled_reason: str | None = Field(description="410 Gone, or failing for SUSPENSIONS_WEBHOOKS_DISABLE_AFTER")
    disabled_at: datetime | None
    failing_since: datetime | None = Field(description="First failed attempt since the last success")
    created_at: datetime
    previous_secret_until: datetime | None = Field(description="After a rotation: the old secret signs until then")
    pending: int = Field(description="Deliveries not yet delivered nor given up")
    oldest_pending_at: datetime | None
    last_delivered_at: datetime | None


class WebhookSecret(BaseModel):
    id: str
    secret: str


class WebhookRemoved(BaseModel):
    id: str
    removed: bool


class WebhookDelivery(BaseModel):
    """One event sent (or to send) to the endpoint, with its last attempt."""

    delivery_id: int
    event_id: str = Field(description="The webhook-id header: the event's event_id, the same on every attempt")
    type: str
    customer_id: str
    replay: int = Field(description="0, or the number of the replay that sent it again")
    status: Literal["pending", "delivered", "failed"] = Field(description="failed: given up")
    attempts: int
    occurred_at: datetime
    created_at: datetime
    next_attempt_at: datetime | None
    finished_at: datetime | None
    status_code: int | None = Field(description="Of the last attempt; none for no answer")
    latency_ms: float | None
    last_attempt_at: datetime | None
    error: str | None


class ReplayRequest(BaseModel):
    since: str = Field(description="ISO 8601 with an offset, or a local date or date-time read in the space's "
                                   "time zone: every event of the endpoint since then is sent again")


class WebhookReplayed(BaseModel):
    id: str
    replayed: int = Field(description="How many events are sent again")


class WebhookTestSent(BaseModel):
    id: str
    event_id: str = Field(description="The test delivery's webhook-id")


# --- bulk jobs -----------------------------------------------------------------------------------


class BulkAccepted(BaseModel):
    bulk_id: str


class _ReportLine(BaseModel):
    # Each kind of line has exactly its fields: a line of one kind never reads as another.
    model_config = ConfigDict(extra="forbid")

    line: int = Field(description="The line's number in the file (1 is the first)")


class MalformedReportLine(_ReportLine):
    """A line that is not ``customer_id,space_id[,note]`` within the contract's limits: not sent."""

    error: str


class OtherSpaceLine(_ReportLine):
    """A line naming another space than the job's: not sent."""

    customer_id: str
    error: str


class UnsentLine(_ReportLine):
    """A customer unknown in this space (``not found``), or a line left when the job's token was revoked
    (``not sent``)."""

    customer_id: str
    error: str
    problem: Literal["not found", "not sent"]


class SentLine(_ReportLine):
    """A published command and its outcome (``unconfirmed``: none known when the job ended)."""

    customer_id: str
    command_id: str
    outcome: BulkOutcome


ReportLine = SentLine | UnsentLine | OtherSpaceLine | MalformedReportLine
REPORT = TypeAdapter(list[ReportLine])  # how a job's report is stored (jsonb) and read back


def summary_key(entry: ReportLine) -> str:
    """What a report line counts as in a job's summary: its outcome, its problem, or ``malformed``."""
    if isinstance(entry, SentLine):
        return str(entry.outcome)
    if isinstance(entry, UnsentLine):
        return entry.problem
    return "malformed"


class BulkStatus(BaseModel):
    """A bulk job: progress while it runs, then its report, line by line, and the report's summary."""

    bulk_id: str
    space_id: str
    action: Literal[Action.SUSPEND, Action.LIFT]
    actor: str
    status: Literal["running", "done", "failed"]
    lines: int = Field(description="Lines read so far")
    published: int = Field(description="Commands published so far")
    report: list[ReportLine] | None = Field(description="Per line, in line order, once the job ended")
    error: str | None = Field(description="Why a failed job ended")
    created_at: datetime
    updated_at: datetime
    summary: dict[str, int] = Field(description="Report lines per outcome (changed, noop, rejected, unconfirmed) "
                                                "or problem (not found, not sent, malformed)")


# --- invoices ------------------------------------------------------------------------------------


class DroppedJob(BaseModel):
    """An invoice job not billed at its cycle, and how it was settled."""

    job_id: str
    customer_id: str
    space_id: str
    contract_id: str
    amount: str = Field(description="A decimal, as text (no rounding)")
    currency: str
    status: Literal["dropped", "rebilled", "waived"]
    suspension_version: int | None
    decided_at: datetime
    settled_at: datetime | None


class InvoiceTotal(BaseModel):
    status: Literal["dropped", "rebilled", "waived"]
    currency: str
    jobs: int
    total: str = Field(description="A decimal, as text (no rounding)")


class DroppedInvoices(BaseModel):
    jobs: list[DroppedJob]
    totals: list[InvoiceTotal] = Field(description="Per status and currency")


# --- lag -----------------------------------------------------------------------------------------

# Burrow's statuses (suspensions.lag.Status, by name), best to worst.
LagStatus = Literal["OK", "WARN", "REWIND", "STALL", "STOP"]


class PartitionLagRow(BaseModel):
    topic: str
    partition: int
    committed: int | None = Field(description="None: the group never committed on this partition")
    log_end: int
    lag: int
    time_lag_s: float = Field(description="Age of the oldest record not yet processed (0 when caught up)")
    status: LagStatus


class GroupLag(BaseModel):
    """One consumer group, with its worst partition's status (what ``suspensions lag --json`` reports)."""

    group: str
    status: LagStatus
    active_members: int
    partitions: list[PartitionLagRow]
    total_lag: int


# --- a space at a glance (issue 26) ----------------------------------------------------------------


class ReasonCount(BaseModel):
    reason: str
    customers: int


class CountsNow(BaseModel):
    """What holds at the moment of the answer."""

    suspended: int = Field(description="Customers suspended now")
    by_reason: list[ReasonCount] = Field(description="Customers suspended now for each reason (a customer "
                                                     "suspended for two reasons counts under both)")
    scheduled_suspensions: int = Field(description="Suspensions scheduled within the next 7 days")
    scheduled_lifts: int = Field(description="Lifts scheduled within the next 7 days")
    dead_letters: int = Field(description="Records of this space refused in the last 24 hours")


class Amount(BaseModel):
    """Invoice jobs of one currency: how many, and their amounts summed (never across currencies)."""

    currency: str
    jobs: int
    amount: str = Field(description="A decimal, as text (no rounding)")


class SummaryDay(BaseModel):
    """One day of the space's own time zone."""

    day: date
    suspended_by_reason: dict[str, int] = Field(description="Customers suspended at the end of the day (now, "
                                                            "for today), per reason")
    suspensions: int = Field(description="Suspensions that started that day")
    lifts: int = Field(description="Suspensions lifted that day")
    lift_median_s: float | None = Field(description="Of the suspensions lifted that day: median duration, s")
    lift_p90_s: float | None = Field(description="... and its 90th percentile (nearest rank), s")
    dropped: list[Amount] = Field(description="Invoice jobs dropped that day (whether billed back or waived "
                                              "since), per currency")
    billed: list[Amount] = Field(description="Dropped jobs billed back on a lift that day, per currency")
    waived: list[Amount] = Field(description="Dropped jobs waived on a lift that day, per currency")


class SummaryTotals(BaseModel):
    suspensions: int
    lifts: int
    lift_median_s: float | None
    lift_p90_s: float | None
    dropped: list[Amount]
    billed: list[Amount]
    waived: list[Amount]


class SpaceSummary(BaseModel):
    """The figures of the console's overview of a space: now, and per day of a range."""

    space_id: str
    time_zone: str = Field(description="The space's zone (settings.spaces; UTC where none is set): days are its")
    from_day: date = Field(description="The range's first day (inclusive)")
    to_day: date = Field(description="The range's last day (inclusive)")
    generated_at: datetime
    now: CountsNow
    totals: SummaryTotals = Field(description="Over the range")
    days: list[SummaryDay]


class PersonProfile(BaseModel):
    """Who a customer is, as upstream said (signups, `customer.profile`); personal data."""

    customer_id: str
    display_name: str | None
    email: str | None


CustomerPage.model_rebuild()  # its profiles are declared below it
