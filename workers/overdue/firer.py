"""Fires overdue invoices: the overdue worker that owns an invoice's partition suspends its customer.

Each poll takes the partition lock of the partitions this worker holds (the one a batch of
`invoice.status` takes), finds the open invoices whose moment has come, publishes their suspend commands
and waits for the broker, and only then marks them fired and commits. So a payment read at the same time
either settles the invoice before its moment is seen, or comes after the suspension is on
`suspension.commands` (its release is published behind it); a crash before the commit fires the invoice
again with the same command id, which the state worker applies once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import UTC, datetime

from aiokafka.errors import KafkaError

from topics import INVOICE_STATUS
from workers.overdue.rule import suspend_command
from workers.runtime.context import WorkerContext
from workers.runtime.db import invoices
from workers.runtime.db.pool import TRANSIENT_DB_ERRORS
from workers.runtime.outbox import lock_source_partitions
from workers.runtime.publishing import command_record, publish_all
from workers.runtime.retry import retry

log = logging.getLogger(__name__)

DUE_PER_POLL = 5_000


class OverdueFirer:
    def __init__(self, context: WorkerContext, partitions: Callable[[], set[int]]) -> None:
        self._context = context
        self._partitions = partitions

    async def run(self, stop: asyncio.Event) -> None:
        settings = self._context.settings
        interval = settings.schedule_poll_interval_ms / 1000

        def failed(error: BaseException, delay: float) -> None:
            log.warning("firing overdue invoices failed, retrying", extra={"error": repr(error), "backoff_s": delay})

        while not stop.is_set():
            try:
                fired = await retry(self.fire_due, (KafkaError, *TRANSIENT_DB_ERRORS), settings.backoff, failed, stop)
            except (KafkaError, *TRANSIENT_DB_ERRORS):
                return  # failed while stopping
            if fired[0] >= DUE_PER_POLL:
                continue  # more are due already
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)

    async def fire_due(self) -> int:
        partitions = sorted(self._partitions())
        if not partitions:
            return 0
        async with self._context.database.acquire() as conn, conn.transaction():
            await lock_source_partitions(conn, INVOICE_STATUS.name, partitions)
            now = datetime.now(UTC)
            due = await invoices.due_invoices(conn, partitions, now, DUE_PER_POLL)
            if not due:
                return 0
            commands = [suspend_command(invoice, moment) for invoice, moment in due]
            await publish_all(self._context.producer,
                              [command_record(command, invoice.source_partition)
                               for command, (invoice, _) in zip(commands, due, strict=True)])
            await invoices.mark_fired(conn, [(invoice.customer_id, invoice.invoice_id, moment, command.command_id)
                                             for command, (invoice, moment) in zip(commands, due, strict=True)])
        metrics = self._context.metrics
        metrics.overdue_commands.labels(action="suspend").inc(len(commands))
        for _, moment in due:
            metrics.overdue_fire_delay_seconds.observe(max(0.0, (now - moment).total_seconds()))
        log.info("overdue invoices fired", extra={"worker": self._context.name, "count": len(commands)})
        return len(commands)
