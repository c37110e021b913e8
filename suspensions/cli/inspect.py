"""Read-only commands: a customer's status and history, a space's customers, invoice decisions."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.table import Table

from models.moments import shown
from suspensions import people, queries
from suspensions.cli.common import (
    JsonFlag,
    console,
    database,
    print_json,
    print_state,
    run_async,
    settings,
    state_dict,
)
from suspensions.operators import InvoiceView, invoice_view
from suspensions.zones import UTC_ZONE, space_zone
from workers.runtime.db import invoices

SpaceFilter = Annotated[str | None, typer.Option("--space", help="Only within this space.")]
billing_app = typer.Typer(help="Invoice jobs decided by the billing consumer.", no_args_is_help=True)


def status(customer: str, space: SpaceFilter = None, as_json: JsonFlag = False) -> None:
    """Current state of one customer: suspended or not, why, and since when."""
    async def main() -> int:
        async with database(settings()) as conn:
            state = await queries.customer_state(conn, customer)
            rows = await invoices.customer_invoices(conn, state.space_id, customer) if state is not None else []
        if state is None or (space is not None and state.space_id != space):
            if as_json:
                print_json(None)
            else:
                console.print(f"customer {customer} has no suspension state (never suspended)")
            return 1
        tz = await space_zone(settings(), state.space_id) if rows else UTC_ZONE
        now = datetime.now(UTC)
        views = [invoice_view(row, tz, now) for row in rows]
        if as_json:
            print_json(state_dict(state) | {"invoices": [view.model_dump() for view in views]})
            return 0
        if state.suspended:
            console.print(f"[bold red]{customer} is suspended[/bold red] since {shown(state.suspended_at)} "
                          f"(reasons: {', '.join(state.reasons)})")
        else:
            console.print(f"[bold green]{customer} is active[/bold green]"
                          + (f" (lifted at {shown(state.lifted_at)})" if state.lifted_at else ""))
        print_state(state_dict(state))
        if views:
            console.print(_invoices_table(views))
        return 0

    raise typer.Exit(run_async(main()))


def _invoices_table(views: list[InvoiceView]) -> Table:
    """Open and overdue invoices first (as the overdue rule knows them), then the settled ones."""
    table = Table(title="invoices (invoice.status)")
    for column in ("invoice", "status", "due", "overdue from", "amount"):
        table.add_column(column)
    for view in sorted(views, key=lambda view: (view.status != "open", not view.overdue)):
        status = "overdue" if view.overdue else view.status
        table.add_row(view.invoice_id, status + (" (suspended for it)" if view.suspended_for else ""), view.when_due,
                      view.when_overdue, f"{view.amount or ''} {view.currency or ''}".strip())
    return table


def history(customer: str, space: SpaceFilter = None, as_json: JsonFlag = False) -> None:
    """Every command applied to one customer: when, who, why, and what caused it."""
    async def main() -> int:
        async with database(settings()) as conn:
            rows = await queries.customer_history(conn, customer)
            erasures = await people.erasures_of(conn, customer)
        entries = [dict(row) for row in rows if space is None or row["space_id"] == space]
        if as_json:
            print_json(entries)
            return 0
        if not entries:
            console.print(f"no history for customer {customer}")
            return 0
        table = Table(title=f"history of {customer}")
        for column in ("applied at", "action", "reason", "actor", "outcome", "version", "cause", "schedule", "note"):
            table.add_column(column)
        for e in entries:
            cause = f"{e['cause_topic']}:{e['cause_event_id']}" if e["cause_topic"] else ""
            action = e["action"] + (f" ({e['missed_invoices']})" if e["missed_invoices"] else "")
            table.add_row(shown(e["applied_at"]), action, e["reason"], e["actor"], e["outcome"],
                          str(e["version_after"]), cause, _schedule_text(e), e["note"] or "")
        console.print(table)
        for erasure in erasures:
            if space is None or erasure["space_id"] == space:
                console.print(f"personal data (name, email) erased at {shown(erasure['erased_at'])} "
                              f"by {erasure['actor']}")
        return 0

    raise typer.Exit(run_async(main()))


def _schedule_text(entry: dict[str, object]) -> str:
    """What a history row did to schedules: scheduled for a moment, fired (with its delay), cancelled."""
    parts = []
    if entry["scheduled_at"]:
        parts.append(f"at {entry['scheduled_at']}")
    if entry["until_at"]:
        parts.append(f"until {entry['until_at']}")
    if entry["fired_delay_ms"] is not None:
        parts.append(f"fired {entry['schedule_id']} {entry['fired_delay_ms']} ms after its moment")
    elif entry["schedule_id"]:
        parts.append(f"schedule {entry['schedule_id']}")
    return "; ".join(parts)


def list_customers(
    space: Annotated[str, typer.Option("--space", help="The space (tenant) to list.")],
    suspended: Annotated[bool, typer.Option("--suspended", help="Only suspended customers.")] = False,
    limit: Annotated[int, typer.Option("--limit", min=1)] = 1000,
    as_json: JsonFlag = False,
) -> None:
    """Customers of one space with their suspension state."""
    async def main() -> None:
        async with database(settings()) as conn:
            states = await queries.space_states_page(conn, space, suspended=True if suspended else None, after="",
                                                     search="", limit=limit)
        if as_json:
            print_json([state_dict(state) for state in states])
            return
        table = Table(title=f"customers of {space}" + (" (suspended)" if suspended else ""))
        for column in ("customer", "suspended", "reasons", "suspended at", "lifted at", "version"):
            table.add_column(column)
        for s in states:
            table.add_row(s.customer_id, "yes" if s.suspended else "no", ", ".join(s.reasons),
                          shown(s.suspended_at), shown(s.lifted_at), str(s.version))
        console.print(table)

    run_async(main())


@billing_app.command("dropped")
def billing_dropped(
    space: Annotated[str | None, typer.Option("--space")] = None,
    customer: Annotated[str | None, typer.Option("--customer")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1)] = 1000,
    as_json: JsonFlag = False,
) -> None:
    """Dropped, rebilled and waived invoice jobs, with totals per currency."""
    statuses = ["dropped", "rebilled", "waived"]

    async def main() -> None:
        async with database(settings()) as conn:
            jobs = await queries.invoice_decisions(conn, space_id=space, customer_id=customer,
                                                   statuses=statuses, limit=limit)
            totals = await queries.invoice_totals(conn, space_id=space, customer_id=customer, statuses=statuses)
        if as_json:
            print_json({"jobs": [dict(j) for j in jobs],
                        "totals": [{**dict(t), "total": str(t["total"])} for t in totals]})
            return
        table = Table(title="invoice jobs not billed at their cycle")
        for column in ("job", "customer", "space", "contract", "amount", "status", "suspension v", "decided at"):
            table.add_column(column)
        for j in jobs:
            table.add_row(j["job_id"], j["customer_id"], j["space_id"], j["contract_id"],
                          f"{j['amount']} {j['currency']}", j["status"], str(j["suspension_version"] or ""),
                          shown(j["decided_at"]))
        console.print(table)
        summary = Table(title="totals")
        for column in ("status", "currency", "jobs", "total"):
            summary.add_column(column)
        for t in totals:
            summary.add_row(t["status"], t["currency"], str(t["jobs"]), str(t["total"]))
        console.print(summary)

    run_async(main())


def register(app: typer.Typer) -> None:
    app.command("status")(status)
    app.command("history")(history)
    app.command("list")(list_customers)
    app.add_typer(billing_app, name="billing")
