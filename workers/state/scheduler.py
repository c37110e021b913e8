"""Fires due schedules: the state worker that owns a customer's partition publishes the command.

No singleton to fail: each state worker polls the pending schedules of the partitions it holds
(``schedules.source_partition``) and publishes each due one as an ordinary command on
`suspension.commands`, keyed by the customer, through the same path and the same exactly-once
effect as any other. The command's id derives from the schedule and its moment, so a schedule
published twice (a crash, a rebalance, two owners for a moment) is applied once, and a schedule
moved after its command was published is not fired early (the stale command is a no-op).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime

import asyncpg
from aiokafka.errors import KafkaError

from models import Action, MissedInvoices, Reason, Source, SuspensionCommand
from workers.runtime.context import WorkerContext
from workers.runtime.db import repository
from workers.runtime.db.pool import TRANSIENT_DB_ERRORS
from workers.runtime.publishing import command_record, publish_all
from workers.runtime.retry import retry

log = logging.getLogger(__name__)

# A published fire command not applied after this long is published again (same id: no double effect).
REPUBLISH_AFTER_S = 10.0
DUE_PER_POLL = 5_000


def fire_command(row: asyncpg.Record) -> SuspensionCommand:
    """The command a due schedule becomes: as a manual one, issued at the schedule's moment."""
    at: datetime = row["at"]
    action = Action(row["action"])
    return SuspensionCommand(
        command_id=f"fire:{row['schedule_id']}:{int(at.timestamp() * 1000)}",
        issued_at=at, space_id=row["space_id"], customer_id=row["customer_id"], action=action,
        reason=Reason.MANUAL, actor=row["actor"], note=row["note"],
        missed_invoices=MissedInvoices(row["missed_invoices"]) if action is Action.LIFT and row["missed_invoices"]
        else None,
        source=Source.SCHEDULE, schedule_id=row["schedule_id"],
    )


class ScheduleFirer:
    def __init__(self, context: WorkerContext, partitions: Callable[[], set[int]]) -> None:
        self._context = context
        self._partitions = partitions
        self._published: dict[str, float] = {}  # fire command id -> when it was published (monotonic)

    async def run(self, stop: asyncio.Event) -> None:
        settings = self._context.settings
        interval = settings.schedule_poll_interval_ms / 1000

        def failed(error: BaseException, delay: float) -> None:
            log.warning("firing schedules failed, retrying", extra={"error": repr(error), "backoff_s": delay})

        while not stop.is_set():
            try:
                # The one retry loop: a dependency that is down is asked again with backoff, not every poll.
                await retry(self.fire_due, (KafkaError, *TRANSIENT_DB_ERRORS), settings.backoff, failed, stop)
            except (KafkaError, *TRANSIENT_DB_ERRORS):
                return  # failed while stopping
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)

    async def fire_due(self) -> int:
        partitions = sorted(self._partitions())
        if not partitions:
            return 0
        async with self._context.database.acquire() as conn:
            rows = await repository.due_schedules(conn, partitions, datetime.now(UTC), DUE_PER_POLL)
        now = time.monotonic()
        self._published = {key: at for key, at in self._published.items() if now - at < REPUBLISH_AFTER_S}
        commands = [command for command in map(fire_command, rows) if command.command_id not in self._published]
        if not commands:
            return 0
        await publish_all(self._context.producer, [command_record(command) for command in commands])
        self._published.update((command.command_id, now) for command in commands)
        self._context.metrics.schedules_fired.inc(len(commands))
        log.info("schedules due, commands published", extra={"worker": self._context.name, "count": len(commands)})
        return len(commands)
