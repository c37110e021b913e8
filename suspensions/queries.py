"""The operators' read queries: state, history, lists, invoice decisions, command outcomes.

The CLI and the console call these; none of them writes. Every query that lists customers
takes the space, so a caller scoped to a space sees nothing of another.
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from models import CustomerState
from workers.runtime.db.repository import STATE_COLUMNS, state_from_row
from workers.state.transitions import Outcome


async def customer_state(conn: asyncpg.Connection, customer_id: str) -> CustomerState | None:
    row = await conn.fetchrow(f"SELECT {STATE_COLUMNS} FROM customer_state WHERE customer_id = $1", customer_id)
    return None if row is None else state_from_row(row)


async def known_customers(conn: asyncpg.Connection, space_id: str, customer_ids: Sequence[str]) -> set[str]:
    """Those of these customers the service knows in this space (a customer of another space is not among them)."""
    rows = await conn.fetch("SELECT customer_id FROM customer_state WHERE space_id = $1 AND customer_id = ANY($2::text[])",
                            space_id, list(customer_ids))
    return {row["customer_id"] for row in rows}


async def customer_history(conn: asyncpg.Connection, customer_id: str) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(
        "SELECT command_id, space_id, action, reason, actor, note, cause_topic, cause_event_id, missed_invoices, "
        "issued_at, applied_at, outcome, version_after, schedule_id, scheduled_at, until_at, fired_delay_ms "
        "FROM command_history WHERE customer_id = $1 ORDER BY id",
        customer_id,
    )
    return rows


async def invoice_decisions(
    conn: asyncpg.Connection, *, space_id: str | None, customer_id: str | None, statuses: Sequence[str], limit: int
) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(
        "SELECT job_id, customer_id, space_id, contract_id, amount, currency, status, suspension_version, "
        "decided_at, settled_at FROM invoice_decisions "
        "WHERE status = ANY($1::text[]) AND ($2::text IS NULL OR space_id = $2) "
        "AND ($3::text IS NULL OR customer_id = $3) ORDER BY decided_at, job_id LIMIT $4",
        list(statuses), space_id, customer_id, limit,
    )
    return rows


async def invoice_totals(
    conn: asyncpg.Connection, *, space_id: str | None, customer_id: str | None, statuses: Sequence[str]
) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(
        "SELECT status, currency, count(*) AS jobs, sum(amount) AS total FROM invoice_decisions "
        "WHERE status = ANY($1::text[]) AND ($2::text IS NULL OR space_id = $2) "
        "AND ($3::text IS NULL OR customer_id = $3) GROUP BY status, currency ORDER BY status, currency",
        list(statuses), space_id, customer_id,
    )
    return rows


async def command_outcomes(conn: asyncpg.Connection, command_ids: Sequence[str]) -> dict[str, Outcome]:
    """Outcomes (changed / noop / rejected) of those of these commands the state worker processed."""
    rows = await conn.fetch(
        "SELECT command_id, outcome FROM processed_commands WHERE command_id = ANY($1::text[])", list(command_ids)
    )
    return {row["command_id"]: Outcome(row["outcome"]) for row in rows}


SCHEDULE_COLUMNS = "schedule_id, customer_id, space_id, action, at, missed_invoices, actor, note, status, updated_at"


async def pending_schedules(conn: asyncpg.Connection, space_id: str, limit: int = 1000) -> list[asyncpg.Record]:
    """A space's pending schedules, soonest first."""
    rows: list[asyncpg.Record] = await conn.fetch(
        f"SELECT {SCHEDULE_COLUMNS} FROM schedules WHERE space_id = $1 AND status = 'pending' "
        "ORDER BY at, schedule_id LIMIT $2", space_id, limit)
    return rows


async def schedule(conn: asyncpg.Connection, schedule_id: str) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await conn.fetchrow(
        f"SELECT {SCHEDULE_COLUMNS}, fired_at, fired_delay_ms FROM schedules WHERE schedule_id = $1", schedule_id)
    return row


async def space_states_page(conn: asyncpg.Connection, space_id: str, *, suspended: bool | None, after: str,
                            search: str, limit: int) -> list[CustomerState]:
    """One page of a space's customers in customer id order (keyset: those after ``after``), optionally only
    the (not) suspended ones, or those whose id contains ``search``."""
    rows = await conn.fetch(
        f"SELECT {STATE_COLUMNS} FROM customer_state WHERE space_id = $1 AND ($2::boolean IS NULL OR suspended = $2) "
        "AND customer_id > $3 AND ($4 = '' OR strpos(customer_id, $4) > 0) ORDER BY customer_id LIMIT $5",
        space_id, suspended, after, search, limit,
    )
    return [state_from_row(row) for row in rows]
