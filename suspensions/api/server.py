"""`suspensions run api`: the operator API and console as one more runnable of the process."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator

import uvicorn

from suspensions.api.app import build_app
from suspensions.api.service import Operations
from workers.runtime.config import Settings
from workers.runtime.db.pool import connect_pool
from workers.runtime.kafka import start_producer
from workers.runtime.metrics import Metrics

log = logging.getLogger(__name__)


class _Server(uvicorn.Server):
    """The runner owns SIGINT/SIGTERM (one stop event for every runnable of the process)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def serve_api(settings: Settings, stop: asyncio.Event, metrics: Metrics) -> None:
    resources: dict[str, object] = {}

    async def operations() -> Operations:
        pool = await connect_pool(settings, stop)
        producer = await start_producer(settings, stop)
        resources.update(pool=pool, producer=producer)
        return Operations(settings, pool, producer)

    async def close() -> None:
        if "producer" in resources:
            await resources["producer"].stop()  # type: ignore[attr-defined]
        if "pool" in resources:
            await resources["pool"].close()  # type: ignore[attr-defined]

    app = build_app(operations, metrics, close)
    server = _Server(uvicorn.Config(app, host=settings.api_host, port=settings.api_port, log_level="warning",
                                    access_log=False, lifespan="on", proxy_headers=True))
    serving = asyncio.create_task(server.serve(), name="api")
    log.info("api serving", extra={"host": settings.api_host, "port": settings.api_port})
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait({serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
    server.should_exit = True
    stopping.cancel()
    await serving
