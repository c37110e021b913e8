"""The workers' SQL, behind small functions that take a connection.

Batch statements take the batch's rows as one JSON parameter (``json_rows``), so a whole
batch is one round trip. The outbox's SQL lives with the outbox (``workers/runtime/outbox.py``),
the operators' read queries with the application (``suspensions/queries.py``).
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg
import orjson

from models import STATE_FIELDS, Action, CustomerState, MissedInvoices, Reason, ScheduledEntry


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
    schedule_id: str | None = None  # the schedule this command cancelled or fired
    scheduled_at: datetime | None = None  # `at` of a command that scheduled
    until_at: datetime | None = None
    fired_delay_ms: int | None = None  # a fired schedule: how long after its moment it applied
    suspended_after: bool | None = None  # whether the customer was suspended after it (a release may lift)


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


# PostgreSQL types of the Python types the row classes use (an Optional takes its inner type).
_SQL_TYPES: dict[object, str] = {
    str: "text", bool: "boolean", int: "bigint", datetime: "timestamptz", tuple[Reason, ...]: "text[]",
    str | None: "text", datetime | None: "timestamptz", int | None: "bigint", bool | None: "boolean",
    tuple[ScheduledEntry, ...]: "jsonb",
}


def recordset_columns(row_class: type, names: Sequence[str]) -> str:
    """``name type, ...`` of a row class's fields, for ``json_to_recordset(...) AS t(...)``."""
    hints = typing.get_type_hints(row_class)
    return ", ".join(f"{name} {_SQL_TYPES[hints[name]]}" for name in names)


STATE_COLUMNS = ", ".join(STATE_FIELDS)
STATE_RECORDSET = recordset_columns(CustomerState, STATE_FIELDS)
STATE_UPDATES = ", ".join(f"{name} = EXCLUDED.{name}" for name in STATE_FIELDS if name != "customer_id")


_REASONS = {reason.value: reason for reason in Reason}  # a tenth of the cost of Reason(value)


def state_from_row(row: asyncpg.Record) -> CustomerState:
    """A row selected with ``STATE_COLUMNS`` (other columns beside them are left alone)."""
    values = {name: row[name] for name in STATE_FIELDS}
    values["reasons"] = tuple(_REASONS[reason] for reason in row["reasons"])
    values["scheduled"] = scheduled_from_json(row["scheduled"])
    return CustomerState(**values)


_ACTIONS = {action.value: action for action in Action}
_MISSED = {missed.value: missed for missed in MissedInvoices}


def scheduled_from_json(text: str) -> tuple[ScheduledEntry, ...]:
    if text == "[]":  # nearly every row: no schedule
        return ()
    return tuple(
        ScheduledEntry(entry["schedule_id"], _ACTIONS[entry["action"]], datetime.fromisoformat(entry["at"]),
                       _MISSED.get(entry["missed_invoices"] or ""), entry["actor"], entry["note"])
        for entry in orjson.loads(text))


# --- state worker ---------------------------------------------------------------------------


async def lock_states(conn: asyncpg.Connection, customer_ids: Iterable[str], *, share: bool = False) -> dict[str, CustomerState]:
    """Read and lock the stored states; always in customer id order, so two batches never deadlock."""
    mode = "FOR SHARE" if share else "FOR UPDATE"
    rows = await conn.fetch(
        f"SELECT {STATE_COLUMNS} FROM customer_state WHERE customer_id = ANY($1::text[]) "
        f"ORDER BY customer_id {mode}",
        sorted(set(customer_ids)),
    )
    return {row["customer_id"]: state_from_row(row) for row in rows}


async def read_for_commands(conn: asyncpg.Connection, lock_keys: Sequence[str], customer_ids: Iterable[str],
                            command_ids: Iterable[str]) -> tuple[dict[str, CustomerState], set[str]]:
    """The source partitions' lock (``lock_keys``, none when held already), then the batch's stored states,
    locked, then which of its command ids were processed before, in one round trip: ``state_batch_read``
    (migration 013) runs the three statements server-side, each with a fresh snapshot, so the ids read after
    the lock include those committed by the transaction it waited for (one SQL statement could not: its
    snapshot is taken before it waits)."""
    rows = await conn.fetch(
        f"SELECT processed_id, {STATE_COLUMNS} FROM state_batch_read($1::text[], $2::text[], $3::text[])",
        list(lock_keys), sorted(set(customer_ids)), list(set(command_ids)),
    )
    states: dict[str, CustomerState] = {}
    processed: set[str] = set()
    for row in rows:
        processed_id = row["processed_id"]
        if processed_id is not None:
            processed.add(processed_id)
        else:
            states[row["customer_id"]] = state_from_row(row)
    return states, processed


HISTORY_NAMES = [field.name for field in dataclasses.fields(HistoryRow)]
HISTORY_FIELDS = ", ".join(HISTORY_NAMES)
HISTORY_COLUMNS = recordset_columns(HistoryRow, HISTORY_NAMES)


def applied_arguments(states: Sequence[CustomerState], history: Sequence[HistoryRow],
                      outcomes: Sequence[tuple[str, str]], at: datetime, schedules: Sequence[ScheduleRow]) -> list[object]:
    """The parameters $1 to $5 of ``APPLIED_CTES``."""
    return [json_rows(states), json_rows(history), json_rows(outcomes), at, json_rows(schedules)]


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


@dataclass(slots=True)
class ScheduleRow:
    """One row of schedules (its fields name the columns)."""

    schedule_id: str
    customer_id: str
    space_id: str
    action: str
    at: datetime
    missed_invoices: str | None
    actor: str
    note: str | None
    source_partition: int
    status: str  # pending, fired, cancelled
    updated_by_command: str
    updated_at: datetime
    fired_at: datetime | None = None
    fired_delay_ms: int | None = None


SCHEDULE_NAMES = [field.name for field in dataclasses.fields(ScheduleRow)]
SCHEDULE_FIELDS = ", ".join(SCHEDULE_NAMES)
SCHEDULE_COLUMNS = recordset_columns(ScheduleRow, SCHEDULE_NAMES)
SCHEDULE_UPDATES = ", ".join(f"{name} = EXCLUDED.{name}" for name in SCHEDULE_NAMES if name != "schedule_id")


# A batch's writes as common table expressions ($1 states, $2 history, $3 processed ids and outcomes, $4 their
# moment, $5 schedules), for one statement with the outbox's rows (``UnitOfWork.commit``): the state worker's
# batch writes in one round trip. The processed ids are new by construction: the handler drops those
# ``read_for_commands`` found, under the source partitions' lock.
APPLIED_CTES = f"""
    applied_states AS (
        INSERT INTO customer_state ({STATE_COLUMNS})
        SELECT {STATE_COLUMNS}
        FROM json_to_recordset($1::json) AS t({STATE_RECORDSET})
        ON CONFLICT (customer_id) DO UPDATE SET {STATE_UPDATES}
        WHERE customer_state.version < EXCLUDED.version
    ), applied_history AS (
        INSERT INTO command_history ({HISTORY_FIELDS})
        SELECT {HISTORY_FIELDS}
        FROM ROWS FROM (json_to_recordset($2::json) AS ({HISTORY_COLUMNS})) WITH ORDINALITY AS t
        ORDER BY t.ordinality  -- ids in the batch's order
    ), applied_ids AS (
        INSERT INTO processed_commands (command_id, outcome, processed_at)
        SELECT pair->>0, pair->>1, $4 FROM json_array_elements($3::json) AS pair
    ), applied_schedules AS (
        INSERT INTO schedules ({SCHEDULE_FIELDS}) SELECT {SCHEDULE_FIELDS}
        FROM json_to_recordset($5::json) AS t({SCHEDULE_COLUMNS})
        ON CONFLICT (schedule_id) DO UPDATE SET {SCHEDULE_UPDATES}
    )"""


async def due_schedules(conn: asyncpg.Connection, partitions: Sequence[int], now: datetime,
                        limit: int) -> list[asyncpg.Record]:
    """Pending schedules of these partitions whose moment has come, soonest first."""
    rows: list[asyncpg.Record] = await conn.fetch(
        "SELECT schedule_id, customer_id, space_id, action, at, missed_invoices, actor, note FROM schedules "
        "WHERE status = 'pending' AND source_partition = ANY($1::int[]) AND at <= $2 ORDER BY at LIMIT $3",
        list(partitions), now, limit)
    return rows
