"""The ``bulk_jobs`` table: every statement the API's bulk jobs run, in one place.

A job lives in PostgreSQL, not in the process that runs it: any API process answers its status, and a
job whose process died is seen as such (it stops being marked alive). The service layer
(``service.Operations``) decides when each of these runs; nothing here decides anything.
"""

from __future__ import annotations

from datetime import datetime

import asyncpg

COLUMNS = "bulk_id, space_id, action, actor, status, lines, published, report, error, created_at, updated_at"


async def lock_actor(conn: asyncpg.Connection, actor: str) -> None:
    """Serialise the jobs of one token (till the transaction ends), so two uploads at the same moment
    cannot both slip under its limit."""
    await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", f"bulk_jobs:{actor}")


async def running(conn: asyncpg.Connection, actor: str, alive_since: datetime) -> int:
    """The actor's running jobs marked alive since then (one whose process died counts no more)."""
    count: int = await conn.fetchval(
        "SELECT count(*) FROM bulk_jobs WHERE actor = $1 AND status = 'running' AND updated_at >= $2",
        actor, alive_since)
    return count


async def record(conn: asyncpg.Connection, bulk_id: str, space_id: str, action: str, actor: str,
                 now: datetime) -> None:
    await conn.execute(
        "INSERT INTO bulk_jobs (bulk_id, space_id, action, actor, status, created_at, updated_at) "
        "VALUES ($1, $2, $3, $4, 'running', $5, $5)", bulk_id, space_id, action, actor, now)


async def mark_alive(conn: asyncpg.Connection, bulk_id: str, now: datetime) -> None:
    await conn.execute("UPDATE bulk_jobs SET updated_at = $2 WHERE bulk_id = $1 AND status = 'running'",
                       bulk_id, now)


async def progress(conn: asyncpg.Connection, bulk_id: str, lines: int, published: int, now: datetime) -> None:
    await conn.execute("UPDATE bulk_jobs SET lines = $2, published = $3, updated_at = $4 WHERE bulk_id = $1",
                       bulk_id, lines, published, now)


async def finish(conn: asyncpg.Connection, bulk_id: str, status: str, report_json: str, lines: int,
                 published: int, error: str | None, now: datetime) -> None:
    """End a job with its report (JSON text); its counts never go below what progress recorded."""
    await conn.execute(
        "UPDATE bulk_jobs SET status = $2, report = $3::jsonb, lines = greatest(lines, $4), "
        "published = greatest(published, $5), error = $6, updated_at = $7 WHERE bulk_id = $1",
        bulk_id, status, report_json, lines, published, error, now)


async def end_if_abandoned(conn: asyncpg.Connection, bulk_id: str, space_id: str, error: str, now: datetime,
                           alive_since: datetime) -> None:
    """A running job not marked alive since then (its process died, or was stopped) is over: failed."""
    await conn.execute(
        "UPDATE bulk_jobs SET status = 'failed', error = $3, updated_at = $4 "
        "WHERE bulk_id = $1 AND space_id = $2 AND status = 'running' AND updated_at < $5",
        bulk_id, space_id, error, now, alive_since)


async def job(conn: asyncpg.Connection, bulk_id: str, space_id: str) -> asyncpg.Record | None:
    """The job, if it is this space's (another space's answers as one that does not exist)."""
    row: asyncpg.Record | None = await conn.fetchrow(
        f"SELECT {COLUMNS} FROM bulk_jobs WHERE bulk_id = $1 AND space_id = $2", bulk_id, space_id)
    return row
