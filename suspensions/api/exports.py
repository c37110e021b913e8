"""The CSV export of a space's suspensions: one row per suspension that started in the range.

A cell a spreadsheet would read as a formula (one starting with ``=``, ``+``, ``-``, ``@``, a tab or a
carriage return) is neutralised with a leading apostrophe (OWASP's advice for CSV injection): names,
emails and notes come from upstream systems and operators, not from us.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from decimal import Decimal

from models import utc_iso
from suspensions import overview, people

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
HEADER = ("customer_id", "display_name", "email", "reasons", "suspended_at", "lifted_at", "suspended_by",
          "lifted_by", "missed_invoices", "notes", "invoices_dropped", "amount_dropped", "invoices_billed",
          "amount_billed", "invoices_waived", "amount_waived")


def neutralised(cell: str) -> str:
    return "'" + cell if cell.startswith(FORMULA_STARTS) else cell


def per_currency(figures: dict[str, tuple[int, Decimal]]) -> tuple[str, str]:
    """Jobs, and amounts per currency (``120.00 EUR; 30 GBP``: never summed across currencies)."""
    return (str(sum(jobs for jobs, _ in figures.values())),
            "; ".join(f"{amount} {currency}" for currency, (_, amount) in sorted(figures.items())))


def suspensions_csv(rows: Iterable[tuple[overview.Suspension, people.Profile | None]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(HEADER)
    for suspension, profile in rows:
        cells = [
            suspension.customer_id, (profile.display_name if profile else None) or "",
            (profile.email if profile else None) or "", " ".join(suspension.reason_names),
            utc_iso(suspension.suspended_at), utc_iso(suspension.lifted_at) if suspension.lifted_at else "",
            suspension.suspended_by, suspension.lifted_by or "", suspension.missed_invoices or "",
            " | ".join(suspension.notes),
            *per_currency(suspension.invoices.get("dropped", {})),
            *per_currency(suspension.invoices.get("billed", {})),
            *per_currency(suspension.invoices.get("waived", {})),
        ]
        writer.writerow([neutralised(cell) for cell in cells])
    return out.getvalue()
