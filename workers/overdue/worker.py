"""The overdue worker: the batch loop over `invoice.status`, the firing of overdue invoices for the
partitions that loop holds, the spaces' rules followed from `settings.overdue`, and the retention of settled
invoices."""

from __future__ import annotations

import asyncio

from topics import INVOICE_STATUS
from workers.overdue.firer import OverdueFirer
from workers.overdue.handler import InvoiceStatusHandler
from workers.overdue.settings_follower import OverdueSettingsFollower
from workers.runtime.batch_worker import BatchWorker
from workers.runtime.context import WorkerContext
from workers.runtime.retention import Pruner, overdue_rules
from workers.runtime.supervise import run_beside


class OverdueWorker:
    def __init__(self, context: WorkerContext) -> None:
        self.batches = BatchWorker(context, INVOICE_STATUS.name, InvoiceStatusHandler(context.name, context.metrics))
        self.firer = OverdueFirer(context, lambda: self.batches.assigned)
        self.follower = OverdueSettingsFollower(context)
        self.pruner = Pruner(overdue_rules(context.settings), context.database, context.settings, context.metrics)

    async def run(self, stop: asyncio.Event) -> None:
        await run_beside(self.batches.run(stop), self.firer.run(stop), self.follower.run(stop), self.pruner.run(stop))
