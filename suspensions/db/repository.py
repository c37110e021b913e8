"""Every SQL statement of the service, behind small functions that take a connection.

Batch statements take the batch's rows as one JSON parameter (``json_rows``), so a whole
batch is one round trip.
"""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg
import orjson

from models import Reason
from workers.state.transitions import CustomerState


@dataclass(slots=True)
class OutboxRecord:
    topic: str
    key: bytes | None
    value: bytes
    record_id: str  # travels as a header so consumers can deduplicate
    source_partition: int
    event_time: float | None = None  # for the latency metric only; not stored


@dataclass(slots=True)
class HistoryRow:
    """One row of command_history (its fields name the columns)."""

    command_id: str
    customer_id: str
    space_id: str
    action: str
    reason: str
    actor: str
    note: str | None
    cause_topic: str | None
    cause_event_id: str | None
    missed_invoices: str | None
    issued_at: datetime
    applied_at: datetime
    outcome: str
    version_after: int
    source_partition: int
    source_offset: int


@dataclass(slots=True)
class DecisionRow:
    job_id: str
    customer_id: str
    space_id: str
    contract_id: str
    amount: str
    currency: str
    status: str
    suspension_version: int | None
    job: str
    decided_at: datetime


def json_rows(rows: Sequence[object]) -> str:
    """Rows (dataclasses or dicts) for ``json_to_recordset``: one text parameter per batch. asyncpg
    encodes arrays element by element with Python-level checks; as JSON a batch upsert takes half
    the time (bench/RESULTS.md)."""
    return orjson.dumps(rows).decode()


STATE_COLUMNS = (
    "customer_id, space_id, suspended, reasons, suspended_at, lifted_at, version, updated_at, last_command_id"
)


_REASONS = {reason.value: reason for reason in Reason}  # a tenth of the cost of Reason(value)


def _state_from_row(row: asyncpg.Record) -> CustomerState:
    return CustomerState(
        customer_id=row["customer_id"],
        space_id=row["space_id"],
        suspended=row["suspended"],
        reasons=tuple(_REASONS[reason] for reason in row["reasons"]),
        suspended_at=row["suspended_at"],
        lifted_at=row["lifted_at"],
        version=row["version"],
        updated_at=row["updated_at"],
        last_command_id=row["last_command_id"],
    )


# --- state worker ---------------------------------------------------------------------------


async def lock_states(conn: asyncpg.Connection, customer_ids: Iterable[str], *, share: bool = False) -> dict[str, CustomerState]:
    """Read and lock the stored states; always in customer id order, so two batches never deadlock."""
    mode = "FOR SHARE" if share else "FOR UPDATE"
    rows = await conn.fetch(
        f"SELECT {STATE_COLUMNS} FROM customer_state WHERE customer_id = ANY($1::text[]) "
        f"ORDER BY customer_id {mode}",
        sorted(set(customer_ids)),
    )
    return {row["customer_id"]: _state_from_row(row) for row in rows}


async def processed_among(conn: asyncpg.Connection, command_ids: Iterable[str]) -> set[str]:
    """Which of these commands were applied or rejected before. Asked after ``lock_states`` in its
    own statement: a statement's snapshot is taken when it starts, so a check in the locking
    statement would miss ids committed by the transaction it waited for."""
    rows = await conn.fetch(
        "SELECT command_id FROM processed_commands WHERE command_id = ANY($1::text[])", list(set(command_ids))
    )
    return {row["command_id"] for row in rows}


HISTORY_FIELDS = ", ".join(field.name for field in dataclasses.fields(HistoryRow))
HISTORY_COLUMNS = """command_id text, customer_id text, space_id text, action text, reason text, actor text,
    note text, cause_topic text, cause_event_id text, missed_invoices text, issued_at timestamptz,
    applied_at timestamptz, outcome text, version_after bigint, source_partition integer, source_offset bigint"""


async def write_applied(conn: asyncpg.Connection, states: Sequence[CustomerState], history: Sequence[HistoryRow],
                        outcomes: Sequence[tuple[str, str]], at: datetime) -> None:
    """A batch's new states, history rows and processed ids, in one statement (one round trip)."""
    if not (states or history or outcomes):
        return
    await conn.execute(
        f"""
        WITH states AS (
            INSERT INTO customer_state ({STATE_COLUMNS})
            SELECT {STATE_COLUMNS}
            FROM json_to_recordset($1::json) AS t(customer_id text, space_id text, suspended boolean,
                 reasons text[], suspended_at timestamptz, lifted_at timestamptz, version bigint,
                 updated_at timestamptz, last_command_id text)
            ON CONFLICT (customer_id) DO UPDATE SET
                suspended = EXCLUDED.suspended, reasons = EXCLUDED.reasons,
                suspended_at = EXCLUDED.suspended_at, lifted_at = EXCLUDED.lifted_at,
                version = EXCLUDED.version, updated_at = EXCLUDED.updated_at,
                last_command_id = EXCLUDED.last_command_id
            WHERE customer_state.version < EXCLUDED.version
        ), history AS (
            INSERT INTO command_history ({HISTORY_FIELDS})
            SELECT {HISTORY_FIELDS}
            FROM ROWS FROM (json_to_recordset($2::json) AS ({HISTORY_COLUMNS})) WITH ORDINALITY AS t
            ORDER BY t.ordinality  -- ids in the batch's order
        )
        INSERT INTO processed_commands (command_id, outcome, processed_at)
        SELECT pair->>0, pair->>1, $4 FROM json_array_elements($3::json) AS pair
        ON CONFLICT (command_id) DO NOTHING
        """,
        json_rows(states), json_rows(history), json_rows(outcomes), at,
    )


async def settle_dropped_jobs(
    conn: asyncpg.Connection, settlements: dict[str, tuple[str, str]], at: datetime
) -> dict[str, list[str]]:
    """Mark the jobs dropped during the suspensions just ended, for every customer in one statement.

    ``settlements`` maps a customer to (new status, lifting command id); returns each customer's
    settled job texts in the order they were dropped.
    """
    rows = await conn.fetch(
        "UPDATE invoice_decisions AS d SET status = s.status, settled_at = $4, settled_by_command = s.command_id "
        "FROM unnest($1::text[], $2::text[], $3::text[]) AS s(customer_id, status, command_id) "
        "WHERE d.customer_id = s.customer_id AND d.status = 'dropped' "
        "RETURNING d.customer_id, d.job, d.decided_at, d.job_id",
        list(settlements), [status for status, _ in settlements.values()],
        [command_id for _, command_id in settlements.values()], at,
    )
    settled: dict[str, list[str]] = {customer_id: [] for customer_id in settlements}
    for row in sorted(rows, key=lambda row: (row["decided_at"], row["job_id"])):
        settled[row["customer_id"]].append(row["job"])
    return settled


# --- billing worker -------------------------------------------------------------------------


async def decided_jobs(conn: asyncpg.Connection, job_ids: Iterable[str]) -> set[str]:
    rows = await conn.fetch("SELECT job_id FROM invoice_decisions WHERE job_id = ANY($1::text[])", list(set(job_ids)))
    return {row["job_id"] for row in rows}


async def insert_decisions(conn: asyncpg.Connection, rows: Sequence[DecisionRow]) -> None:
    if not rows:
        return
    await conn.execute(
        """
        INSERT INTO invoice_decisions (job_id, customer_id, space_id, contract_id, amount, currency, status,
                                       suspension_version, job, decided_at)
        SELECT * FROM json_to_recordset($1::json) AS t(job_id text, customer_id text, space_id text,
             contract_id text, amount numeric, currency text, status text, suspension_version bigint, job text,
             decided_at timestamptz)
        ON CONFLICT (job_id) DO NOTHING
        """,
        json_rows(rows),
    )


# --- outbox ---------------------------------------------------------------------------------

_U16 = struct.Struct(">H")
_I32 = struct.Struct(">i")


def pack_records(records: Iterable[OutboxRecord]) -> bytes:
    """Records to publish, in order, as one value: per record a u16-prefixed topic, an i32-prefixed key
    (-1 for none), an i32-prefixed value and a u16-prefixed record id. One outbox row per batch and
    source partition costs one insert and one delete, where a row per record cost one of each per record."""
    parts: list[bytes] = []
    for record in records:
        topic, record_id = record.topic.encode(), record.record_id.encode()
        parts += (_U16.pack(len(topic)), topic)
        if record.key is None:
            parts.append(_I32.pack(-1))
        else:
            parts += (_I32.pack(len(record.key)), record.key)
        parts += (_I32.pack(len(record.value)), record.value, _U16.pack(len(record_id)), record_id)
    return b"".join(parts)


def _read_field(packed: bytes, at: int, prefix: struct.Struct) -> tuple[bytes | None, int]:
    (size,) = prefix.unpack_from(packed, at)
    at += prefix.size
    if size < 0:
        return None, at
    return packed[at:at + size], at + size


def unpack_records(packed: bytes, source_partition: int) -> list[OutboxRecord]:
    """The inverse of ``pack_records``."""
    records: list[OutboxRecord] = []
    at = 0
    while at < len(packed):
        topic, at = _read_field(packed, at, _U16)
        key, at = _read_field(packed, at, _I32)
        value, at = _read_field(packed, at, _I32)
        record_id, at = _read_field(packed, at, _U16)
        assert topic is not None and value is not None and record_id is not None
        records.append(OutboxRecord(topic.decode(), key, value, record_id.decode(), source_partition))
    return records


async def replace_outbox(conn: asyncpg.Connection, source_topic: str, records: Sequence[OutboxRecord],
                         published_ids: Sequence[int]) -> list[int]:
    """Delete the rows already published and insert this batch's records, one row per source partition
    and in order, in one statement; returns the new row ids."""
    if not records and not published_ids:
        return []
    by_partition: dict[int, list[OutboxRecord]] = {}
    for record in records:
        by_partition.setdefault(record.source_partition, []).append(record)
    rows = await conn.fetch(
        "WITH published AS (DELETE FROM outbox WHERE id = ANY($4::bigint[])) "
        "INSERT INTO outbox (source_topic, source_partition, records) "
        "SELECT $1, * FROM unnest($2::int[], $3::bytea[]) RETURNING id",
        source_topic, list(by_partition), [pack_records(group) for group in by_partition.values()],
        list(published_ids),
    )
    return [row["id"] for row in rows]


async def pending_outbox(
    conn: asyncpg.Connection, source_topic: str, partitions: Iterable[int]
) -> tuple[list[int], list[OutboxRecord]]:
    """Rows left unpublished for these source partitions: their ids, and their records in order."""
    rows = await conn.fetch(
        "SELECT id, source_partition, records FROM outbox "
        "WHERE source_topic = $1 AND source_partition = ANY($2::int[]) ORDER BY id",
        source_topic, list(partitions),
    )
    records = [record for row in rows for record in unpack_records(row["records"], row["source_partition"])]
    return [row["id"] for row in rows], records


async def delete_outbox(conn: asyncpg.Connection, ids: Sequence[int]) -> None:
    if ids:
        await conn.execute("DELETE FROM outbox WHERE id = ANY($1::bigint[])", list(ids))


# --- queries for operators ------------------------------------------------------------------


async def customer_state(conn: asyncpg.Connection, customer_id: str) -> CustomerState | None:
    row = await conn.fetchrow(f"SELECT {STATE_COLUMNS} FROM customer_state WHERE customer_id = $1", customer_id)
    return None if row is None else _state_from_row(row)


async def customer_history(conn: asyncpg.Connection, customer_id: str) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT command_id, space_id, action, reason, actor, note, cause_topic, cause_event_id, missed_invoices, "
        "issued_at, applied_at, outcome, version_after FROM command_history WHERE customer_id = $1 ORDER BY id",
        customer_id,
    )


async def space_states(
    conn: asyncpg.Connection, space_id: str, *, suspended_only: bool, limit: int
) -> list[CustomerState]:
    rows = await conn.fetch(
        f"SELECT {STATE_COLUMNS} FROM customer_state WHERE space_id = $1 AND ($2 = false OR suspended) "
        "ORDER BY customer_id LIMIT $3",
        space_id, suspended_only, limit,
    )
    return [_state_from_row(row) for row in rows]


async def command_applied(conn: asyncpg.Connection, command_id: str) -> str | None:
    """The outcome of a processed command, or None while it is not processed."""
    return await conn.fetchval("SELECT outcome FROM processed_commands WHERE command_id = $1", command_id)


async def invoice_decisions(
    conn: asyncpg.Connection, *, space_id: str | None, customer_id: str | None, statuses: Sequence[str], limit: int
) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT job_id, customer_id, space_id, contract_id, amount, currency, status, suspension_version, "
        "decided_at, settled_at FROM invoice_decisions "
        "WHERE status = ANY($1::text[]) AND ($2::text IS NULL OR space_id = $2) "
        "AND ($3::text IS NULL OR customer_id = $3) ORDER BY decided_at, job_id LIMIT $4",
        list(statuses), space_id, customer_id, limit,
    )


async def invoice_totals(
    conn: asyncpg.Connection, *, space_id: str | None, customer_id: str | None, statuses: Sequence[str]
) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT status, currency, count(*) AS jobs, sum(amount) AS total FROM invoice_decisions "
        "WHERE status = ANY($1::text[]) AND ($2::text IS NULL OR space_id = $2) "
        "AND ($3::text IS NULL OR customer_id = $3) GROUP BY status, currency ORDER BY status, currency",
        list(statuses), space_id, customer_id,
    )
