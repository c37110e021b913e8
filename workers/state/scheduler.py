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
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

import asyncpg
from aiokafka.errors import KafkaError

from models import ID_MAX_LENGTH, Action, MissedInvoices, Reason, Source, SuspensionCommand
from models.base import name_based_id
from workers.runtime.context import WorkerContext
from workers.runtime.db import repository
from workers.runtime.db.pool import TRANSIENT_DB_ERRORS
from workers.runtime.publishing import command_record, publish_all
from workers.runtime.retry import retry

log = logging.getLogger(__name__)

# A published fire command not applied after this long is published again (same id: no double effect).
REPUBLISH_AFTER_S = 10.0
DUE_PER_POLL = 5_000
FIRE_NAMESPACE = uuid.UUID("6f1f1a52-0c0e-4c8e-9a36-1d1f5d0c9e21")


def fire_id(schedule_id: str, at: datetime) -> str:
    """``fire:<schedule>:<moment in ms>``; for a schedule id too long for that to be an id (its command's id
    near the 200-character bound), the schedule id's name-based UUID stands in its place."""
    moment = int(at.timestamp() * 1000)
    plain = f"fire:{schedule_id}:{moment}"
    return plain if len(plain) <= ID_MAX_LENGTH else f"fire:{name_based_id(FIRE_NAMESPACE, schedule_id)}:{moment}"


def fire_command(row: asyncpg.Record) -> SuspensionCommand:
    """The command a due schedule becomes: as a manual one, issued at the schedule's moment."""
    at: datetime = row["at"]
    action = Action(row["action"])
    return SuspensionCommand(
        command_id=fire_id(row["schedule_id"], at),
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

    def _fire_command(self, row: asyncpg.Record) -> SuspensionCommand | None:
        """A due schedule's command; a stored schedule the contract no longer accepts (written before it
        refused control characters) is logged once per poll and left pending, never a stop of the firer."""
        try:
            return fire_command(row)
        except ValueError as error:
            log.error("a due schedule cannot be fired", extra={"schedule_id": row["schedule_id"],
                                                               "cause": type(error).__name__})
            return None

    async def fire_due(self) -> int:
        partitions = sorted(self._partitions())
        if not partitions:
            return 0
        async with self._context.database.acquire() as conn:
            rows = await repository.due_schedules(conn, partitions, datetime.now(UTC), DUE_PER_POLL)
        now = time.monotonic()
        self._published = {key: at for key, at in self._published.items() if now - at < REPUBLISH_AFTER_S}
        commands = [command for command in map(self._fire_command, rows)
                    if command is not None and command.command_id not in self._published]
        if not commands:
            return 0
        await publish_all(self._context.producer, [command_record(command) for command in commands])
        self._published.update((command.command_id, now) for command in commands)
        self._context.metrics.schedules_fired.inc(len(commands))
        log.info("schedules due, commands published", extra={"worker": self._context.name, "count": len(commands)})
        return len(commands)
