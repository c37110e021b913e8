"""The directory's SQL: profiles upserted last-write-wins, dead letters once per rejected record."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg
import orjson

from workers.directory.rules import DeadLetterRow, ProfileRow

# A stored profile is replaced only by a later moment, and never by one older than its erasure.
UPSERT_PROFILES = """
INSERT INTO customer_profiles (space_id, customer_id, display_name, email, updated_at, source)
SELECT space_id, customer_id, display_name, email, updated_at, source
FROM json_to_recordset($1::json) AS r(space_id text, customer_id text, display_name text, email text,
                                      updated_at timestamptz, source text)
ON CONFLICT (space_id, customer_id) DO UPDATE
SET display_name = EXCLUDED.display_name, email = EXCLUDED.email, updated_at = EXCLUDED.updated_at,
    source = EXCLUDED.source
WHERE customer_profiles.updated_at < EXCLUDED.updated_at
  AND (customer_profiles.forgotten_at IS NULL OR customer_profiles.forgotten_at < EXCLUDED.updated_at)
"""

INSERT_DEAD_LETTERS = """
INSERT INTO dead_letters (record_id, space_id, source_topic, worker, error, failed_at)
SELECT record_id, space_id, source_topic, worker, error, failed_at
FROM json_to_recordset($1::json) AS r(record_id text, space_id text, source_topic text, worker text, error text,
                                      failed_at timestamptz)
ON CONFLICT (record_id) DO NOTHING
"""


async def write(conn: asyncpg.Connection, profiles: Sequence[ProfileRow], letters: Sequence[DeadLetterRow]) -> None:
    async with conn.transaction():
        if profiles:
            await conn.execute(UPSERT_PROFILES, orjson.dumps([
                {"space_id": p.space_id, "customer_id": p.customer_id, "display_name": p.display_name,
                 "email": p.email, "updated_at": p.updated_at.isoformat(), "source": p.source} for p in profiles
            ]).decode())
        if letters:
            await conn.execute(INSERT_DEAD_LETTERS, orjson.dumps([
                {"record_id": d.record_id, "space_id": d.space_id, "source_topic": d.source_topic,
                 "worker": d.worker, "error": d.error, "failed_at": d.failed_at.isoformat()} for d in letters
            ]).decode())
