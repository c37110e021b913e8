"""The billing consumer: the batch loop over `invoice.jobs`, and the retention of its decisions."""

from __future__ import annotations

import asyncio

from topics import INVOICE_JOBS
from workers.billing.handler import BillingHandler
from workers.runtime.batch_worker import BatchWorker
from workers.runtime.context import WorkerContext
from workers.runtime.retention import Pruner, billing_rules
from workers.runtime.supervise import run_beside


class BillingWorker:
    def __init__(self, context: WorkerContext) -> None:
        self.batches = BatchWorker(context, INVOICE_JOBS.name, BillingHandler(context.name, context.metrics))
        self.pruner = Pruner(billing_rules(context.settings), context.database, context.settings, context.metrics)

    async def run(self, stop: asyncio.Event) -> None:
        await run_beside(self.batches.run(stop), self.pruner.run(stop))
