"""`suspensions run api`: the operator API and console as one more runnable of the process.

Served hardened (``edge.harden``: body limits, security headers) with uvicorn's ``proxy_headers``, so
a trusted proxy's ``X-Forwarded-For`` / ``X-Forwarded-Proto`` give the client address (throttling) and
the scheme (HSTS, Secure cookies). Its readiness is reported on the process's internal port
(``SUSPENSIONS_HTTP_PORT``, with the workers'), where its metrics are too: one registry per process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator

import uvicorn
from fastapi import FastAPI

from suspensions.api.app import build_app
from suspensions.api.capacity import connect_api_pool
from suspensions.api.edge import harden
from suspensions.api.service import Operations
from workers.runtime.broker_check import check_broker
from workers.runtime.config import Settings
from workers.runtime.db.pool import database_answers
from workers.runtime.health import WorkerHealth
from workers.runtime.kafka import start_producer
from workers.runtime.metrics import Metrics

log = logging.getLogger(__name__)

DEPENDENCY_CHECK_INTERVAL_S = 2.0


class _Server(uvicorn.Server):
    """The runner owns SIGINT/SIGTERM (one stop event for every runnable of the process)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def _report_health(app: FastAPI, settings: Settings, health: WorkerHealth, stop: asyncio.Event) -> None:
    """Keep the API's entry of the internal /readyz true to what it can reach (Kafka, PostgreSQL)."""
    while not stop.is_set():
        health.beat()
        ops: Operations | None = getattr(app.state, "operations", None)
        if ops is None:
            health.database_ok, health.database_cause = False, "connecting"
        else:
            broker = await check_broker(settings, timeout_s=3)
            health.kafka_ok, health.kafka_cause = broker.ok, None if broker.ok else str(broker)
            health.database_ok = await database_answers(ops.pool.pool)
            health.database_cause = None if health.database_ok else "no answer to SELECT 1"
            health.assigned(0)  # no partitions of its own: ready once its dependencies answer
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), DEPENDENCY_CHECK_INTERVAL_S)


async def serve_api(settings: Settings, stop: asyncio.Event, metrics: Metrics,
                    health: WorkerHealth | None = None) -> None:
    resources: dict[str, object] = {}

    async def operations() -> Operations:
        pool = await connect_api_pool(settings, stop)  # its own, bounded: SUSPENSIONS_API_POOL_*
        producer = await start_producer(settings, stop)
        resources.update(pool=pool, producer=producer)
        return Operations(settings, pool, producer)

    async def close() -> None:
        if "producer" in resources:
            await resources["producer"].stop()  # type: ignore[attr-defined]
        if "pool" in resources:
            await resources["pool"].close()  # type: ignore[attr-defined]

    health = health or WorkerHealth("api")
    app = build_app(operations, metrics, close, health)
    server = _Server(uvicorn.Config(harden(app, settings), host=settings.api_host, port=settings.api_port,
                                    log_level="warning", access_log=False, lifespan="on", proxy_headers=True))
    serving = asyncio.create_task(server.serve(), name="api")
    reporting = asyncio.create_task(_report_health(app, settings, health, stop), name="api-health")
    serving.add_done_callback(lambda _: reporting.cancel())
    log.info("api serving", extra={"host": settings.api_host, "port": settings.api_port})
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait({serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
    server.should_exit = True
    stopping.cancel()
    await serving
