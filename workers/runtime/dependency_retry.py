"""A worker's retry of work that needs PostgreSQL or the broker, as its health and metrics tell it.

A failure, or a dependency that did not answer within its timeout (a statement or lock timeout, asyncpg's
command timeout, a Kafka request timeout), is logged at once with its cause, counted, and shown on
/readyz until the work succeeds; the work is then tried again whole after the backoff (a transaction
rolled back whole, a publish repeated: nothing is applied by halves).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiokafka.errors import KafkaError

from workers.runtime.context import WorkerContext
from workers.runtime.db.pool import TRANSIENT_DB_ERRORS, describe
from workers.runtime.retry import retry

log = logging.getLogger(__name__)


async def retry_dependency(context: WorkerContext, action: Callable[[], Awaitable[object]], dependency: str) -> bool:
    """Retry ``action`` on a transient failure with backoff until it succeeds (shutdown cancels it); returns
    True when the first attempt succeeded. ``dependency`` names what the work needed, for logs and metrics."""
    stall = object()
    health = context.health

    async def failed(error: BaseException, delay: float) -> None:
        cause = describe(error)
        health.stalls[stall] = f"retrying {dependency} work after {cause}"
        if isinstance(error, KafkaError):
            health.kafka_ok = False
        else:
            health.database_ok = False
            if context.pool is not None:
                # Connections that lived through the failure are not trusted again.
                await context.pool.expire_connections()
        context.metrics.retries.labels(worker=context.name, dependency=dependency).inc()
        log.warning("transient failure, retrying",
                    extra={"worker": context.name, "dependency": dependency, "error": cause, "backoff_s": delay})

    try:
        _, first_attempt = await retry(action, (KafkaError, *TRANSIENT_DB_ERRORS), context.settings.backoff, failed)
    finally:
        health.stalls.pop(stall, None)
    return first_attempt
