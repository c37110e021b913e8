"""Every worker of the service, declared once.

The runner builds and runs them from here, ``suspensions lag`` and the lag gauge take their
groups and topics from here, readiness asks whether each needs PostgreSQL, and the AsyncAPI
document says which worker reads and writes each topic. A new worker is one more entry.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from topics import (
    CRM_OPPORTUNITIES,
    CUSTOMER_PLAN_CHANGES,
    CUSTOMER_PROFILE,
    CUSTOMER_SIGNUPS,
    DEADLETTER,
    INVOICE_JOBS,
    INVOICE_JOBS_ACCEPTED,
    INVOICE_JOBS_DROPPED,
    INVOICE_STATUS,
    SETTINGS_OVERDUE,
    SETTINGS_TOPICS,
    SUSPENSION_COMMANDS,
    SUSPENSION_EVENTS,
    SUSPENSION_STATE,
    TopicSpec,
)
from workers.billing.worker import BillingWorker
from workers.directory.worker import DirectoryWorker
from workers.overdue.worker import OverdueWorker
from workers.runtime.config import Settings
from workers.runtime.context import RunnableWorker, WorkerContext
from workers.state.worker import StateWorker
from workers.triggers.app import TriggersWorker
from workers.webhooks.worker import WebhooksWorker


@dataclass(frozen=True)
class WorkerSpec:
    name: str
    group: Callable[[Settings], str]  # its consumer group, from the one configuration object
    reads: tuple[TopicSpec, ...]  # consumed in the group: each instance gets a share of partitions
    writes: tuple[TopicSpec, ...]
    needs_database: bool
    build: Callable[[WorkerContext], RunnableWorker]
    follows: tuple[TopicSpec, ...] = ()  # read whole by every instance, without a group

    def __str__(self) -> str:
        return self.name


TRIGGERS = WorkerSpec(
    name="triggers",
    group=lambda settings: settings.triggers_group,
    reads=(CUSTOMER_SIGNUPS, CUSTOMER_PLAN_CHANGES, CRM_OPPORTUNITIES),
    follows=SETTINGS_TOPICS,
    writes=(SUSPENSION_COMMANDS, DEADLETTER),
    needs_database=False,
    build=TriggersWorker,
)
STATE = WorkerSpec(
    name="state",
    group=lambda settings: settings.state_group,
    reads=(SUSPENSION_COMMANDS,),
    writes=(SUSPENSION_STATE, SUSPENSION_EVENTS, INVOICE_JOBS_ACCEPTED, DEADLETTER),
    needs_database=True,
    build=StateWorker,
)
BILLING = WorkerSpec(
    name="billing",
    group=lambda settings: settings.billing_group,
    reads=(INVOICE_JOBS,),
    writes=(INVOICE_JOBS_ACCEPTED, INVOICE_JOBS_DROPPED, DEADLETTER),
    needs_database=True,
    build=BillingWorker,
)
# Invoices' status and each space's overdue rule: suspends for an invoice unpaid too long (issue 23).
OVERDUE = WorkerSpec(
    name="overdue",
    group=lambda settings: settings.overdue_group,
    reads=(INVOICE_STATUS,),
    follows=(SETTINGS_OVERDUE,),
    writes=(SUSPENSION_COMMANDS, DEADLETTER),
    needs_database=True,
    build=OverdueWorker,
)

# Who each customer is (names, emails) and each space's dead letters, for the console (issue 26).
DIRECTORY = WorkerSpec(
    name="directory",
    group=lambda settings: settings.directory_group,
    reads=(CUSTOMER_SIGNUPS, CUSTOMER_PROFILE, DEADLETTER),
    writes=(DEADLETTER,),
    needs_database=True,
    build=DirectoryWorker,
)

# Lifecycle events delivered over HTTP to the endpoints registered per space (issue 22).
WEBHOOKS = WorkerSpec(
    name="webhooks",
    group=lambda settings: settings.webhooks_group,
    reads=(SUSPENSION_EVENTS,),
    writes=(DEADLETTER,),
    needs_database=True,
    build=WebhooksWorker,
)

WORKERS: tuple[WorkerSpec, ...] = (TRIGGERS, STATE, BILLING, OVERDUE, DIRECTORY, WEBHOOKS)
WORKER_NAMES: tuple[str, ...] = tuple(spec.name for spec in WORKERS)


def workers_named(names: Iterable[str]) -> list[WorkerSpec]:
    """The declared workers of these names, in declaration order; ValueError names the unknown ones."""
    wanted = set(names)
    unknown = sorted(wanted - set(WORKER_NAMES))
    if unknown:
        raise ValueError(f"unknown worker(s) {', '.join(unknown)}; choose from {', '.join(WORKER_NAMES)}")
    return [spec for spec in WORKERS if spec.name in wanted]


def consumer_groups(settings: Settings) -> dict[str, tuple[str, ...]]:
    """Each worker's group and the topics it consumes in that group."""
    return {spec.group(settings): tuple(topic.name for topic in spec.reads) for spec in WORKERS}
