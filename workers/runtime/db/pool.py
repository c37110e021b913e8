"""PostgreSQL connections: the workers' pool, and which errors are transient."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import asyncpg

from workers.runtime.config import Settings
from workers.runtime.retry import retry

log = logging.getLogger(__name__)

TRANSIENT_DB_ERRORS: tuple[type[Exception], ...] = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.InterfaceError,
    asyncpg.exceptions.DeadlockDetectedError,
    asyncpg.exceptions.SerializationError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.AdminShutdownError,
    # A connection left in a broken protocol state by an outage; the pool replaces it (see BatchWorker).
    asyncpg.exceptions.InternalClientError,
    # A statement past the statement timeout, or a lock wait past the lock timeout: the database is hung
    # or someone else holds the lock; the transaction is rolled back whole and tried again.
    asyncpg.exceptions.QueryCanceledError,
    asyncpg.exceptions.LockNotAvailableError,
    # The server ended a transaction left idle too long (its client was stopped).
    asyncpg.exceptions.IdleInTransactionSessionTimeoutError,
)


async def _keep_session(connection: asyncpg.Connection) -> None:
    """The workers and the API change no session state (no SET, LISTEN or session advisory locks: the API's
    bulk limit takes a transaction's), so a connection goes back to the pool as it is: asyncpg's default reset costs a round trip per batch. An open
    transaction is still rolled back by the pool."""


# The same, for code that must not take any OSError for the database's (a file, a socket of its own): a
# connection refused or reset still counts.
DATABASE_UNAVAILABLE: tuple[type[Exception], ...] = (
    *(error for error in TRANSIENT_DB_ERRORS if error is not OSError), ConnectionError)


def describe(error: BaseException) -> str:
    """A database error in one line, without the URL (which may carry a password)."""
    if isinstance(error, TimeoutError) and not str(error):
        return "TimeoutError: no answer within the timeout"  # asyncpg's command timeout says nothing more
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


async def connect_pool(settings: Settings, stop: asyncio.Event | None = None,
                       on_unavailable: Callable[[str], None] | None = None,
                       max_size: int | None = None, statement_timeout_s: float | None = None) -> asyncpg.Pool:
    """The pool of a process (``max_size`` connections; a worker's by default), waiting for PostgreSQL with
    backoff at start-up; each failed attempt is logged once with its cause (and passed to
    ``on_unavailable``). Every statement is bounded (``Settings.database_connect_args``)."""
    def unavailable(error: BaseException, delay: float) -> None:
        log.warning("PostgreSQL unreachable, retrying",
                    extra={"database": settings.database_location, "cause": describe(error), "backoff_s": delay})
        if on_unavailable is not None:
            on_unavailable(describe(error))

    pool, _ = await retry(
        lambda: asyncpg.create_pool(**settings.database_connect_args(statement_timeout_s=statement_timeout_s),
                                    min_size=1, max_size=max_size or 2 * settings.batch_max_in_flight + 2,
                                    reset=_keep_session),
        (*TRANSIENT_DB_ERRORS, asyncpg.PostgresError), settings.backoff, unavailable, stop)
    return pool


async def database_answers(pool: asyncpg.Pool, timeout_s: float = 2.0) -> bool:
    """Whether PostgreSQL answers ``SELECT 1`` within the timeout. A connection that got no answer is
    dropped at once: given back as it is, the pool would wait up to the command timeout for its cancel."""
    try:
        conn = await pool.acquire(timeout=timeout_s)
    except Exception:  # noqa: BLE001 - any failure means not reachable
        return False
    try:
        await conn.fetchval("SELECT 1", timeout=timeout_s)
        return True
    except Exception:  # noqa: BLE001 - any failure means not reachable
        conn.terminate()
        return False
    finally:
        await pool.release(conn)
