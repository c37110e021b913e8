"""The state worker: the batch loop over `suspension.commands`, the firing of due schedules for the
partitions that loop holds, and the retention of the tables it owns."""

from __future__ import annotations

import asyncio
import logging

from topics import SUSPENSION_COMMANDS
from workers.runtime.batch_worker import BatchWorker
from workers.runtime.context import WorkerContext
from workers.runtime.kafka import topic_config
from workers.runtime.retention import Pruner, dedup_window_warning, state_rules
from workers.runtime.supervise import run_beside
from workers.state.handler import StateHandler
from workers.state.scheduler import ScheduleFirer

log = logging.getLogger(__name__)


class StateWorker:
    """The state worker: the batch loop over `suspension.commands`, the firing of due schedules for the
    partitions that loop holds, and the retention of processed ids, history and ended schedules."""

    def __init__(self, context: WorkerContext) -> None:
        self.context = context
        handler = StateHandler(context.name, context.metrics, context.settings.lifecycle_events)
        self.batches = BatchWorker(context, SUSPENSION_COMMANDS.name, handler, lock_in_first_read=True)
        self.firer = ScheduleFirer(context, lambda: self.batches.assigned)
        self.pruner = Pruner(state_rules(context.settings), context.database, context.settings, context.metrics)

    async def run(self, stop: asyncio.Event) -> None:
        await run_beside(self.batches.run(stop), self.firer.run(stop), self.pruner.run(stop),
                         self._check_dedup_window())

    async def _check_dedup_window(self) -> None:
        settings = self.context.settings
        retention_ms = await topic_config(settings, SUSPENSION_COMMANDS.name, "retention.ms")
        warning = dedup_window_warning(settings.dedup_retention, retention_ms)
        if warning is not None:
            log.warning(warning, extra={"worker": self.context.name})
