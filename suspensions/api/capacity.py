"""What keeps one API process answering under load: its own bounded pool, and refusals that say when.

A request waits for a PostgreSQL connection at most ``SUSPENSIONS_API_POOL_TIMEOUT_S``; past that it
answers 503 with ``Retry-After`` instead of queueing behind every other request until its client
gives up (a hung request holds a socket and a task, and hides the overload from the load balancer).
A token past its share of bulk jobs answers 429 with ``Retry-After``. A request whose PostgreSQL or broker
does not answer within ``SUSPENSIONS_API_DEPENDENCY_TIMEOUT_S`` (hung, stopped, a lock held elsewhere), or
fails as a dependency that is down, answers 503 with ``Retry-After`` too: nothing it did is left half-done,
since each request's writes are one transaction or one published command. These answers are decided here,
once, for the API and the console alike.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace

import asyncpg
from aiokafka.errors import KafkaError
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from workers.runtime.config import Settings
from workers.runtime.db.pool import DATABASE_UNAVAILABLE, connect_pool, describe

log = logging.getLogger(__name__)

# Background work (a bulk job's progress and report) is not a client waiting on a socket: it may wait
# longer for a connection than a request, so a busy minute does not fail a job that is half published.
BACKGROUND_ACQUIRE_S = 60.0


class PoolBusy(TimeoutError):
    """No PostgreSQL connection came free within the acquire timeout (the process is at capacity).

    A TimeoutError, so the code that already treats a timeout as transient (a bulk job's heartbeat)
    keeps doing so."""


class TooManyBulkJobs(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(f"this token runs {limit} bulk job(s) already; wait for one to finish")


@dataclass(frozen=True)
class ApiPool:
    """The API's pool: every acquire is bounded (PoolBusy past the timeout), and nothing else changes."""

    pool: asyncpg.Pool
    timeout_s: float

    @asynccontextmanager
    async def acquire(self, *, timeout: float | None = None) -> AsyncIterator[asyncpg.Connection]:
        try:
            conn = await self.pool.acquire(timeout=timeout if timeout is not None else self.timeout_s)
        except TimeoutError:
            raise PoolBusy() from None
        try:
            yield conn
        finally:
            await self.pool.release(conn)

    def patient(self) -> ApiPool:
        """The same pool for background work, which may wait longer than a request (BACKGROUND_ACQUIRE_S)."""
        return replace(self, timeout_s=max(self.timeout_s, BACKGROUND_ACQUIRE_S))

    async def close(self) -> None:
        await self.pool.close()


async def connect_api_pool(settings: Settings, stop: asyncio.Event | None = None) -> ApiPool:
    """The API process's pool (``SUSPENSIONS_API_POOL_SIZE`` connections), waiting for PostgreSQL with
    backoff at start-up as the workers' pools do (it is built the same way, ``connect_pool``)."""
    pool = await connect_pool(settings, stop, max_size=settings.api_pool_size,
                              statement_timeout_s=settings.api_dependency_timeout_s)
    return ApiPool(pool, settings.api_pool_timeout_s)


def _refusal(request: Request, status: int, message: str, retry_after_s: float) -> Response:
    headers = {"Retry-After": str(max(1, math.ceil(retry_after_s)))}
    if request.url.path.startswith("/api/"):
        return JSONResponse({"detail": message}, status_code=status, headers=headers)
    return PlainTextResponse(message, status_code=status, headers=headers)


# A dependency that did not answer in time or is not there: the client's retry may succeed. (PoolBusy, a
# TimeoutError too, has its own answer.)
DEPENDENCY_UNAVAILABLE: tuple[type[Exception], ...] = (*DATABASE_UNAVAILABLE, KafkaError)
DEPENDENCY_RETRY_AFTER_S = 5


async def _dependency_unavailable(request: Request, error: Exception) -> Response:
    log.warning("a dependency did not answer in time", extra={"path": request.url.path, "error": describe(error)})
    return _refusal(request, 503, "unavailable: the database or the broker did not answer in time; retry shortly",
                    DEPENDENCY_RETRY_AFTER_S)


def register_capacity_handlers(app: FastAPI) -> None:
    """503 for a request that got no connection in time, 429 for a token past its bulk jobs (counted by
    the request metric under their status)."""

    @app.exception_handler(PoolBusy)
    async def busy(request: Request, _: PoolBusy) -> Response:
        return _refusal(request, 503, "busy: no database connection came free in time; retry shortly", 1)

    for unavailable in DEPENDENCY_UNAVAILABLE:
        app.add_exception_handler(unavailable, _dependency_unavailable)

    @app.exception_handler(TooManyBulkJobs)
    async def too_many(request: Request, error: TooManyBulkJobs) -> Response:
        settings: Settings = request.app.state.operations.settings
        return _refusal(request, 429, str(error), settings.api_bulk_heartbeat_s)
