"""The outbox relay against a real PostgreSQL and broker: rows published once, whatever fails between the
publish and the delete."""

from __future__ import annotations

import asyncpg
import orjson
import pytest

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


async def test_left_over_rows_whose_delete_failed_are_not_published_again(isolated: Settings) -> None:
    """A relay that published left-over rows and then failed to delete them (PostgreSQL answering again after
    a stop, a connection dropped) must not publish them a second time on its next attempt."""
    records = [OutgoingRecord(SUSPENSION_STATE.name, f"c{i}".encode(), orjson.dumps({"n": i}), f"c{i}:1", 0)
               for i in range(5)]
    pool = await asyncpg.create_pool(isolated.database_url, min_size=1, max_size=2)
    try:
        async with pool.acquire() as conn, conn.transaction():
            await replace_rows(conn, SUSPENSION_COMMANDS.name, records, [])  # committed, never published
        await pool.execute(REFUSE_DELETES)
        async with kafka_producer(isolated) as producer:
            outbox = Outbox(SUSPENSION_COMMANDS.name, pool, producer)
            with pytest.raises(asyncpg.RaiseError, match="the outbox delete fails"):
                await outbox.publish_left_over([0])
            assert len(await read_topic(isolated, SUSPENSION_STATE.name)) == len(records)  # published, not deleted

            await pool.execute("DROP TRIGGER test_refuse_outbox_delete ON outbox")
            await outbox.publish_left_over([0])  # the retry

        published = await read_topic(isolated, SUSPENSION_STATE.name)
        assert sorted(value["n"] for _, value in published) == list(range(len(records)))  # each once
        assert await pool.fetchval("SELECT count(*) FROM outbox") == 0
    finally:
        await pool.close()
