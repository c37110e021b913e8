"""The overdue rule's tables: each customer's invoices and each space's rule (migration 008)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import astuple, dataclass, fields
from datetime import datetime

import asyncpg

from models import MissedInvoices


@dataclass(slots=True)
class InvoiceRow:
    """One invoice as the rule knows it (a ``customer_invoices`` row, the same columns in the same order)."""

    customer_id: str
    invoice_id: str
    space_id: str
    status: str  # open | paid | voided
    due_at: datetime | None
    amount: str | None
    currency: str | None
    issued_event_id: str | None
    source_partition: int
    updated_at: datetime
    settled_at: datetime | None = None
    fired_at: datetime | None = None  # the moment the rule suspended for it
    fired_command_id: str | None = None


@dataclass(slots=True)
class RuleSetting:
    """A space's overdue rule (an ``overdue_settings`` row)."""

    space_id: str
    suspend_after_days: int | None
    lift_when_paid: bool
    missed_invoices: MissedInvoices
    updated_at: datetime


INVOICE_COLUMNS = tuple(field.name for field in fields(InvoiceRow))
_COLUMN_LIST = ", ".join(INVOICE_COLUMNS)
_TYPES = ("text", "text", "text", "text", "timestamptz", "text", "text", "text", "integer", "timestamptz",
          "timestamptz", "timestamptz", "text")
_UNNEST = ", ".join(f"${i}::{kind}[]" for i, kind in enumerate(_TYPES, start=1))


def _invoice(row: asyncpg.Record) -> InvoiceRow:
    return InvoiceRow(*(row[name] for name in INVOICE_COLUMNS))


async def invoices_of(conn: asyncpg.Connection, customer_ids: Iterable[str]) -> dict[str, dict[str, InvoiceRow]]:
    """Every invoice of these customers, by customer and invoice id."""
    rows = await conn.fetch(f"SELECT {_COLUMN_LIST} FROM customer_invoices WHERE customer_id = ANY($1::text[])",
                            list(set(customer_ids)))
    found: dict[str, dict[str, InvoiceRow]] = {}
    for row in rows:
        found.setdefault(row["customer_id"], {})[row["invoice_id"]] = _invoice(row)
    return found


async def write_invoices(conn: asyncpg.Connection, invoices: Sequence[InvoiceRow]) -> None:
    if not invoices:
        return
    columns = list(zip(*(astuple(invoice) for invoice in invoices), strict=True))
    updates = ", ".join(f"{name} = EXCLUDED.{name}" for name in INVOICE_COLUMNS[2:])
    await conn.execute(
        f"INSERT INTO customer_invoices ({_COLUMN_LIST}) SELECT * FROM unnest({_UNNEST}) "
        f"ON CONFLICT (customer_id, invoice_id) DO UPDATE SET {updates}",
        *columns,
    )


async def rule_settings(conn: asyncpg.Connection, space_ids: Iterable[str]) -> dict[str, RuleSetting]:
    rows = await conn.fetch(
        "SELECT space_id, suspend_after_days, lift_when_paid, missed_invoices, updated_at FROM overdue_settings "
        "WHERE space_id = ANY($1::text[])", list(set(space_ids)))
    return {row["space_id"]: RuleSetting(row["space_id"], row["suspend_after_days"], row["lift_when_paid"],
                                         MissedInvoices(row["missed_invoices"]), row["updated_at"]) for row in rows}


async def store_setting(conn: asyncpg.Connection, setting: RuleSetting) -> None:
    """The space's rule, unless a newer one is stored already (records may be read again, or out of order)."""
    await conn.execute(
        "INSERT INTO overdue_settings (space_id, suspend_after_days, lift_when_paid, missed_invoices, updated_at) "
        "VALUES ($1, $2, $3, $4, $5) ON CONFLICT (space_id) DO UPDATE SET "
        "suspend_after_days = EXCLUDED.suspend_after_days, lift_when_paid = EXCLUDED.lift_when_paid, "
        "missed_invoices = EXCLUDED.missed_invoices, updated_at = EXCLUDED.updated_at "
        "WHERE overdue_settings.updated_at <= EXCLUDED.updated_at",
        setting.space_id, setting.suspend_after_days, setting.lift_when_paid, setting.missed_invoices.value,
        setting.updated_at,
    )


async def remove_setting(conn: asyncpg.Connection, space_id: str, at: datetime) -> None:
    """A tombstone on `settings.overdue`: the space's rule is off, from ``at`` (the record's broker time). Kept
    as a row, not deleted: the records before it, read again from the topic's start, never turn it back on."""
    await store_setting(conn, RuleSetting(space_id, None, False, MissedInvoices.BILL, at))


# The moment an open invoice falls overdue: its due moment plus the space's days, and never before the
# setting's own updated_at (a rule applies from then on). The SQL twin of ``workers.overdue.rule.overdue_moment``.
_MOMENT = "greatest(i.due_at + s.suspend_after_days * interval '1 day', s.updated_at)"


async def due_invoices(conn: asyncpg.Connection, partitions: Sequence[int], now: datetime,
                       limit: int) -> list[tuple[InvoiceRow, datetime]]:
    """Open invoices of these source partitions whose moment has come, not fired yet, with their moment."""
    rows = await conn.fetch(
        f"SELECT {', '.join('i.' + name for name in INVOICE_COLUMNS)}, {_MOMENT} AS moment "
        "FROM customer_invoices i JOIN overdue_settings s ON s.space_id = i.space_id "
        "WHERE i.source_partition = ANY($1::int[]) AND i.status = 'open' AND i.fired_at IS NULL "
        f"AND s.suspend_after_days IS NOT NULL AND {_MOMENT} <= $2 ORDER BY moment LIMIT $3",
        list(partitions), now, limit,
    )
    return [(_invoice(row), row["moment"]) for row in rows]


async def mark_fired(conn: asyncpg.Connection, fired: Sequence[tuple[str, str, datetime, str]]) -> None:
    """(customer, invoice, moment, command id) of each invoice the rule suspended for."""
    await conn.execute(
        "UPDATE customer_invoices i SET fired_at = f.moment, fired_command_id = f.command_id "
        "FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::text[]) AS f(customer_id, invoice_id, moment, "
        "command_id) WHERE i.customer_id = f.customer_id AND i.invoice_id = f.invoice_id",
        *(list(column) for column in zip(*fired, strict=True)),
    )


async def customer_invoices(conn: asyncpg.Connection, space_id: str, customer_id: str) -> list[asyncpg.Record]:
    """A customer's invoices for operators, with the moment each open one falls (or fell) overdue under the
    space's current rule (null when the rule is off)."""
    rows: list[asyncpg.Record] = await conn.fetch(
        f"SELECT i.invoice_id, i.status, i.due_at, i.amount, i.currency, i.updated_at, i.settled_at, i.fired_at, "
        f"CASE WHEN i.status = 'open' AND s.suspend_after_days IS NOT NULL THEN {_MOMENT} END AS overdue_at "
        "FROM customer_invoices i LEFT JOIN overdue_settings s ON s.space_id = i.space_id "
        "WHERE i.space_id = $1 AND i.customer_id = $2 ORDER BY i.due_at NULLS LAST, i.invoice_id",
        space_id, customer_id,
    )
    return rows
