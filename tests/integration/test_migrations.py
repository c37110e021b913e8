"""Migrations carry data forward: records left in the per-record outbox survive the move to packed rows."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest_asyncio

from tests.support import create_database
from workers.runtime.config import Settings
from workers.runtime.db.migrate import migrate, migration_files
from workers.runtime.outbox import pending_rows
from workers.runtime.publishing import OutgoingRecord


@pytest_asyncio.fixture
async def empty_database(settings: Settings) -> AsyncIterator[str]:
    yield await create_database(settings, "mig")


async def test_unpublished_outbox_rows_survive_the_packed_outbox_migration(empty_database: str) -> None:
    conn = await asyncpg.connect(empty_database)
    try:
        await conn.execute("CREATE TABLE schema_migrations (version text PRIMARY KEY, "
                           "applied_at timestamptz NOT NULL DEFAULT now())")
        for version, sql in migration_files():
            if version >= "003":
                break
            await conn.execute(sql)
            await conn.execute("INSERT INTO schema_migrations (version) VALUES ($1)", version)
        left = [
            ("suspension.commands", 1, "suspension.state", b"c-1", b'{"version":1}', "c-1:1"),
            ("suspension.commands", 1, "deadletter", None, b'{"error":"x"}', "suspension.commands:1:7"),
            ("invoice.jobs", 0, "invoice.jobs.accepted", b"\xff\xfe", b'{"job_id":"j"}', "j"),
            ("suspension.commands", 1, "suspension.state", "c-\u00e9".encode(), b'{"version":2}', "c-\u00e9:2"),
        ]
        await conn.executemany(
            "INSERT INTO outbox (source_topic, source_partition, topic, key, value, record_id) "
            "VALUES ($1, $2, $3, $4, $5, $6)", left)

        assert "003_outbox_per_batch" in await migrate(empty_database)

        ids, commands = await pending_rows(conn, "suspension.commands", [1])
        assert len(ids) == 3
        assert commands == [OutgoingRecord(topic, key, value, record_id, partition)
                            for source, partition, topic, key, value, record_id in left
                            if source == "suspension.commands"]
        _, jobs = await pending_rows(conn, "invoice.jobs", [0])
        assert jobs == [OutgoingRecord("invoice.jobs.accepted", b"\xff\xfe", b'{"job_id":"j"}', "j", 0)]
        assert not await conn.fetchval("SELECT to_regclass('outbox_per_record')")
    finally:
        await conn.close()
