"""Apply the SQL files in ``migrations/`` in order, once each; safe to run again or concurrently."""

from __future__ import annotations

from importlib.resources import files

import asyncpg

MIGRATION_LOCK_ID = 0x5005_9E55


def migration_files() -> list[tuple[str, str]]:
    folder = files("workers.runtime.db") / "migrations"
    names = sorted(item.name for item in folder.iterdir() if item.name.endswith(".sql"))
    return [(name.removesuffix(".sql"), (folder / name).read_text()) for name in names]


async def migrate(dsn: str, password: str | None = None) -> list[str]:
    """Returns the versions applied by this call."""
    conn = await asyncpg.connect(dsn, password=password)
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_ID)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {row["version"] for row in await conn.fetch("SELECT version FROM schema_migrations")}
        applied = []
        for version, sql in migration_files():
            if version in done:
                continue
            async with conn.transaction():
                await conn.execute(sql)
                await conn.execute("INSERT INTO schema_migrations (version) VALUES ($1)", version)
            applied.append(version)
        return applied
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_ID)
        await conn.close()
