"""The state worker: the batch loop over `suspension.commands`, and the firing of due schedules for the
partitions that loop holds."""

from __future__ import annotations

import asyncio

from topics import SUSPENSION_COMMANDS
from workers.runtime.batch_worker import BatchWorker
from workers.runtime.context import WorkerContext
from workers.state.handler import StateHandler
from workers.state.scheduler import ScheduleFirer


class StateWorker:
    """The state worker: the batch loop over `suspension.commands`, and the firing of due schedules for
    the partitions that loop holds."""

    def __init__(self, context: WorkerContext) -> None:
        handler = StateHandler(context.name, context.metrics, context.settings.lifecycle_events)
        self.batches = BatchWorker(context, SUSPENSION_COMMANDS.name, handler)
        self.firer = ScheduleFirer(context, lambda: self.batches.assigned)

    async def run(self, stop: asyncio.Event) -> None:
        firing = asyncio.create_task(self.firer.run(stop), name="schedule-firer")
        try:
            await self.batches.run(stop)
        finally:
            firing.cancel()
            await asyncio.gather(firing, return_exceptions=True)
