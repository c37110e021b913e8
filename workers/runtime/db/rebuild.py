"""The SQL of disaster recovery (`suspensions db check`, `suspensions db rebuild --from-topics`).

Every write moves a row forward or adds a missing one, never back: a state is written only over a lower
version, a history row only when its change (customer and version) is not there, a processed id only when
it is not there. So a rebuild run twice, or over a database restored from an old backup, leaves the newer
rows as they are. Each batch is one statement: the topics are read in batches of a few thousand records.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import asyncpg

from workers.runtime.db.repository import (
    HISTORY_COLUMNS,
    HISTORY_FIELDS,
    STATE_COLUMNS,
    STATE_RECORDSET,
    STATE_UPDATES,
    HistoryRow,
    json_rows,
)
from workers.runtime.outbox import FORMAT_MSGPACK, pack_records, unpack_records
from workers.runtime.publishing import OutgoingRecord

# A schedule the rebuilt state no longer holds ended while the database was away: fired or cancelled (the
# customer's history says which); recorded as cancelled by this marker so that it is never fired again.
ENDED_BY_REBUILD = "rebuild"


async def upsert_states(conn: asyncpg.Connection, values: Sequence[bytes],
                        partitions: dict[str, int]) -> tuple[int, int]:
    """Write these `suspension.state` records (their JSON, one per customer) where the row is missing or of
    a lower version; returns (inserted, updated). The moved customers' pending schedules follow their state:
    its ``scheduled`` list becomes their pending rows in ``schedules`` (what the state worker fires from, by
    ``partitions``: the customer's partition of `suspension.commands`), and a pending row it no longer
    holds is ended."""
    if not values:
        return 0, 0
    row = await conn.fetchrow(
        f"""
        WITH moved AS (
            INSERT INTO customer_state ({STATE_COLUMNS})
            SELECT {STATE_COLUMNS} FROM json_to_recordset($1::json) AS t({STATE_RECORDSET})
            ON CONFLICT (customer_id) DO UPDATE SET {STATE_UPDATES}
            WHERE customer_state.version < EXCLUDED.version
            RETURNING customer_id, space_id, scheduled, last_command_id, updated_at, (xmax = 0) AS inserted
        ), ended AS (
            UPDATE schedules s SET status = 'cancelled', updated_by_command = '{ENDED_BY_REBUILD}',
                                   updated_at = now()
            FROM moved m
            WHERE s.customer_id = m.customer_id AND s.status = 'pending'
              AND NOT m.scheduled @> jsonb_build_array(jsonb_build_object('schedule_id', s.schedule_id))
        ), pending AS (
            INSERT INTO schedules (schedule_id, customer_id, space_id, action, at, missed_invoices, actor, note,
                                   source_partition, status, updated_by_command, updated_at)
            SELECT e->>'schedule_id', m.customer_id, m.space_id, e->>'action', (e->>'at')::timestamptz,
                   e->>'missed_invoices', e->>'actor', e->>'note', p.partition, 'pending', m.last_command_id,
                   m.updated_at
            FROM moved m
            JOIN unnest($2::text[], $3::int[]) AS p(customer_id, partition) ON p.customer_id = m.customer_id
            CROSS JOIN LATERAL jsonb_array_elements(m.scheduled) AS e
            ON CONFLICT (schedule_id) DO UPDATE SET
                customer_id = EXCLUDED.customer_id, space_id = EXCLUDED.space_id, action = EXCLUDED.action,
                at = EXCLUDED.at, missed_invoices = EXCLUDED.missed_invoices, actor = EXCLUDED.actor,
                note = EXCLUDED.note, source_partition = EXCLUDED.source_partition, status = 'pending',
                updated_by_command = EXCLUDED.updated_by_command, updated_at = EXCLUDED.updated_at,
                fired_at = NULL, fired_delay_ms = NULL
        )
        SELECT count(*) FILTER (WHERE inserted) AS inserted, count(*) FILTER (WHERE NOT inserted) AS updated
        FROM moved
        """,
        (b"[" + b",".join(values) + b"]").decode(), list(partitions), list(partitions.values()),
    )
    return int(row["inserted"]), int(row["updated"])


async def insert_missing_history(conn: asyncpg.Connection, rows: Sequence[HistoryRow]) -> tuple[int, int]:
    """Add the history rows (changes) and processed ids of these events that are not there; returns (history
    rows, processed ids) added. A change is known by its customer and version, an id by itself."""
    if not rows:
        return 0, 0
    row = await conn.fetchrow(
        f"""
        WITH t AS (
            SELECT * FROM ROWS FROM (json_to_recordset($1::json) AS ({HISTORY_COLUMNS})) WITH ORDINALITY AS t
        ), history AS (
            INSERT INTO command_history ({HISTORY_FIELDS})
            SELECT {HISTORY_FIELDS} FROM t
            WHERE NOT EXISTS (SELECT 1 FROM command_history h WHERE h.customer_id = t.customer_id
                              AND h.version_after = t.version_after AND h.outcome = 'changed')
            ORDER BY t.ordinality
            RETURNING 1
        ), processed AS (
            INSERT INTO processed_commands (command_id, outcome, processed_at)
            SELECT DISTINCT ON (command_id) command_id, 'changed', applied_at FROM t
            WHERE NOT EXISTS (SELECT 1 FROM processed_commands p WHERE p.command_id = t.command_id)
            ORDER BY command_id, applied_at
            RETURNING 1
        )
        SELECT (SELECT count(*) FROM history) AS history, (SELECT count(*) FROM processed) AS processed
        """,
        json_rows(rows),
    )
    return int(row["history"]), int(row["processed"])


# --- the outbox of a restored backup ---------------------------------------------------------------------


async def outbox_rows(conn: asyncpg.Connection,
                      source_topic: str) -> list[tuple[int, list[OutgoingRecord] | None]]:
    """Every outbox row of a worker's source topic: its id and records (None for a row this release cannot
    read: a newer release's format, or corrupt; such a row is left as it is)."""
    rows = await conn.fetch("SELECT id, source_partition, records, format FROM outbox WHERE source_topic = $1 "
                            "ORDER BY id", source_topic)
    return [(row["id"], _records(row)) for row in rows]


def _records(row: asyncpg.Record) -> list[OutgoingRecord] | None:
    try:
        return unpack_records(row["records"], row["source_partition"], row["format"])
    except ValueError:
        return None


async def delete_outbox_rows(conn: asyncpg.Connection, ids: Sequence[int]) -> None:
    if ids:
        await conn.execute("DELETE FROM outbox WHERE id = ANY($1::bigint[])", list(ids))


async def rewrite_outbox_row(conn: asyncpg.Connection, row_id: int, records: Sequence[OutgoingRecord]) -> None:
    """Keep a row (its id: its place in the order of publication) with fewer records."""
    await conn.execute("UPDATE outbox SET records = $2, format = $3 WHERE id = $1", row_id, pack_records(records),
                       FORMAT_MSGPACK)


# --- db check --------------------------------------------------------------------------------------------


async def create_topic_versions(conn: asyncpg.Connection) -> None:
    """A session's table of the topic's latest version per customer: the comparison runs in PostgreSQL, so
    the command's memory does not grow with the customers."""
    await conn.execute("CREATE TEMP TABLE IF NOT EXISTS topic_versions "
                       "(customer_id text PRIMARY KEY, version bigint NOT NULL)")
    await conn.execute("TRUNCATE topic_versions")


async def add_topic_versions(conn: asyncpg.Connection, customers: Sequence[str], versions: Sequence[int]) -> None:
    """Customers' versions, one each per call; a higher version than the one held replaces it."""
    if customers:
        await conn.execute(
            "INSERT INTO topic_versions SELECT * FROM unnest($1::text[], $2::bigint[]) "
            "ON CONFLICT (customer_id) DO UPDATE SET version = EXCLUDED.version "
            "WHERE topic_versions.version < EXCLUDED.version", list(customers), list(versions))


DIFFERENCES_SQL = """
    SELECT coalesce(s.customer_id, t.customer_id) AS customer_id, s.version AS database_version,
           t.version AS topic_version
    FROM customer_state s FULL JOIN topic_versions t ON t.customer_id = s.customer_id
    WHERE s.version IS DISTINCT FROM t.version
    ORDER BY 1
"""


# --- resuming the state worker's group -------------------------------------------------------------------


async def create_scan_tables(conn: asyncpg.Connection) -> None:
    """A session's tables for the scan of `suspension.commands`: the changed ids met so far (a copy of an id
    met again later, a re-sent command, is a duplicate there, not the change), and every command read, by
    position (for ``insert_applied_ids``)."""
    await conn.execute("CREATE TEMP TABLE IF NOT EXISTS seen_changes (command_id text PRIMARY KEY)")
    await conn.execute("CREATE TEMP TABLE IF NOT EXISTS scanned_commands "
                       "(command_id text NOT NULL, partition integer NOT NULL, \"offset\" bigint NOT NULL, "
                       "at timestamptz NOT NULL)")
    await conn.execute("CREATE TEMP TABLE IF NOT EXISTS state_commands (command_id text PRIMARY KEY)")
    await conn.execute("TRUNCATE seen_changes, scanned_commands, state_commands")


async def remember_state_commands(conn: asyncpg.Connection, command_ids: Sequence[str]) -> None:
    """The commands of the states' last changes, as the compacted topic holds them: each changed a state even
    where its event is gone (events off, or the events topic kept less long) or its processed id was never
    restored, so the scan of the commands counts it as a change (the last of a partition is the greatest
    offset among them)."""
    await conn.execute("INSERT INTO state_commands SELECT unnest($1::text[]) ON CONFLICT DO NOTHING",
                       list(command_ids))


async def first_changes_among(conn: asyncpg.Connection, command_ids: Sequence[str], partitions: Sequence[int],
                              offsets: Sequence[int], moments: Sequence[datetime]) -> set[str]:
    """Keep these commands' positions (``scanned_commands``); return which of their ids changed a state
    (`changed` in processed ids) and are met for the first time in this scan."""
    await conn.execute("INSERT INTO scanned_commands SELECT * FROM unnest($1::text[], $2::int[], $3::bigint[], "
                       "$4::timestamptz[])", list(command_ids), list(partitions), list(offsets), list(moments))
    rows = await conn.fetch(
        "WITH changed AS (SELECT p.command_id FROM processed_commands p "
        "                 WHERE p.command_id = ANY($1::text[]) AND p.outcome = 'changed' "
        "                 UNION SELECT s.command_id FROM state_commands s WHERE s.command_id = ANY($1::text[])) "
        "INSERT INTO seen_changes SELECT command_id FROM changed ON CONFLICT DO NOTHING RETURNING command_id",
        list(dict.fromkeys(command_ids)))
    return {row["command_id"] for row in rows}


async def insert_applied_ids(conn: asyncpg.Connection, resume_at: dict[int, int]) -> int:
    """Processed ids of the commands read before where the group resumes that are not there: each of them was
    applied (a partition's commands are applied in order, and the offsets are committed after), so a copy
    re-sent later must have no effect. Those that changed a state are there already (from their events); the
    others were no-ops, duplicates or rejected: recorded as `noop` (which of the two is not known; the
    worker asks only whether an id is there), at the moment the broker took the command."""
    return int(await conn.fetchval(
        """
        WITH added AS (
            INSERT INTO processed_commands (command_id, outcome, processed_at)
            SELECT DISTINCT ON (s.command_id) s.command_id, 'noop', LEAST(s.at, now())
            FROM scanned_commands s JOIN unnest($1::int[], $2::bigint[]) AS r(partition, resume_at)
              ON r.partition = s.partition AND s."offset" < r.resume_at
            WHERE NOT EXISTS (SELECT 1 FROM processed_commands p WHERE p.command_id = s.command_id)
            ORDER BY s.command_id, s."offset"
            RETURNING 1
        ) SELECT count(*) FROM added
        """, list(resume_at), list(resume_at.values())))
