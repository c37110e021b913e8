"""The webhooks worker: the batch loop over `suspension.events` (each event becomes its deliveries), and
the dispatcher that sends the deliveries of the partitions that loop holds, and the delivery log's retention."""

from __future__ import annotations

import asyncio

from topics import SUSPENSION_EVENTS
from workers.runtime.batch_worker import BatchWorker
from workers.runtime.context import WorkerContext
from workers.runtime.retention import Pruner, webhooks_rules
from workers.runtime.supervise import run_beside
from workers.webhooks.dispatcher import Dispatcher
from workers.webhooks.handler import WebhookHandler


class WebhooksWorker:
    def __init__(self, context: WorkerContext) -> None:
        self.batches = BatchWorker(context, SUSPENSION_EVENTS.name, WebhookHandler(context.name, context.metrics))
        self.dispatcher = Dispatcher(context, lambda: self.batches.assigned)
        self.pruner = Pruner(webhooks_rules(context.settings), context.database, context.settings, context.metrics)

    async def run(self, stop: asyncio.Event) -> None:
        await run_beside(self.batches.run(stop), self.dispatcher.run(stop), self.pruner.run(stop))
