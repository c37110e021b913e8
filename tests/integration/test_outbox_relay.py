"""The outbox relay against a real PostgreSQL and broker: left-over rows published once, whatever fails or is
still uncommitted between their publish and their delete."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import asyncpg
import orjson
import pytest_asyncio

from tests.reliability.harness import read_topic
from topics import SUSPENSION_COMMANDS, SUSPENSION_STATE
from workers.runtime.config import Settings
from workers.runtime.kafka import producer as kafka_producer
from workers.runtime.outbox import Outbox, replace_rows
from workers.runtime.publishing import OutgoingRecord

REFUSE_DELETES = """
CREATE FUNCTION test_refuse_outbox_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'test: the outbox delete fails'; END $$;
CREATE TRIGGER test_refuse_outbox_delete BEFORE DELETE ON outbox
    FOR EACH STATEMENT EXECUTE FUNCTION test_refuse_outbox_delete();
"""
RECORDS = [OutgoingRecord(SUSPENSION_STATE.name, f"c{i}".encode(), orjson.dumps({"n": i}), f"c{i}:1", 0)
           for i in range(5)]


@pytest_asyncio.fixture
async def left_over(isolated: Settings) -> AsyncIterator[tuple[Settings, asyncpg.Pool, Outbox]]:
    """A relay over an outbox holding one committed, never published row of five records."""
    pool = await asyncpg.create_pool(isolated.database_url, min_size=1, max_size=3)
    try:
        async with pool.acquire() as conn, conn.transaction():
            await replace_rows(conn, SUSPENSION_COMMANDS.name, RECORDS, [])
        async with kafka_producer(isolated) as producer:
            yield isolated, pool, Outbox(SUSPENSION_COMMANDS.name, pool, producer)
    finally:
        await pool.close()


async def published_once(settings: Settings) -> bool:
    published = await read_topic(settings, SUSPENSION_STATE.name)
    return sorted(value["n"] for _, value in published) == list(range(len(RECORDS)))


async def test_left_over_rows_whose_delete_fails_are_not_published_again(
        left_over: tuple[Settings, asyncpg.Pool, Outbox]) -> None:
    """Deletes failing after the publish (PostgreSQL answering again after a stop): the attempts that follow
    delete the rows first, and do not read and publish them again."""
    settings, pool, outbox = left_over
    await pool.execute(REFUSE_DELETES)
    for _ in range(2):
        with contextlib.suppress(asyncpg.RaiseError):
            await outbox.publish_left_over([0])
    assert await pool.fetchval("SELECT count(*) FROM outbox") == 1  # published, never deleted

    await pool.execute("DROP TRIGGER test_refuse_outbox_delete ON outbox")
    await outbox.publish_left_over([0])

    assert await published_once(settings)
    assert await pool.fetchval("SELECT count(*) FROM outbox") == 0


async def test_left_over_rows_another_batch_is_deleting_are_not_published_again(
        left_over: tuple[Settings, asyncpg.Pool, Outbox]) -> None:
    """Published rows taken into another partition's batch, whose transaction has deleted them but not yet
    committed, are still visible to a retry's read: it must not publish them again."""
    settings, pool, outbox = left_over
    await outbox.publish_left_over([0])
    with outbox.published_to_delete() as taken:  # as BatchWorker._in_unit_of_work takes them
        assert taken
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute("DELETE FROM outbox WHERE id = ANY($1::bigint[])", taken)
            await outbox.publish_left_over([0])  # the retry of a batch of partition 0, meanwhile
    assert await published_once(settings)
    assert await pool.fetchval("SELECT count(*) FROM outbox") == 0


async def test_a_left_over_row_is_published_then_deleted_with_the_relays_own(
        left_over: tuple[Settings, asyncpg.Pool, Outbox]) -> None:
    settings, pool, outbox = left_over
    assert [r.value for r in await outbox.publish_left_over([0])] == [r.value for r in RECORDS]
    assert outbox.has_published_rows
    await outbox.delete_published()
    assert await published_once(settings)
    assert await pool.fetchval("SELECT count(*) FROM outbox") == 0
    assert await outbox.publish_left_over([0]) == []  # nothing left: a second call publishes nothing
