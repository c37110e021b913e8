"""The `suspensions` command: run workers, operate suspensions, inspect state."""

from __future__ import annotations

import asyncio
import json
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import asyncpg
import typer
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn
from rich.table import Table

from models import Action, MissedInvoices
from suspensions import operators
from suspensions.config import Settings
from suspensions.db import repository
from suspensions.logs import configure_logging
from suspensions.runner import WORKER_NAMES, install_signal_handlers, run_workers

app = typer.Typer(help=__doc__, no_args_is_help=True, add_completion=False)
topics_app = typer.Typer(help="Kafka topics of the contract.", no_args_is_help=True)
db_app = typer.Typer(help="The PostgreSQL schema.", no_args_is_help=True)
contract_app = typer.Typer(help="The published wire contract.", no_args_is_help=True)
bulk_app = typer.Typer(help="Suspend or lift many customers from a CSV file.", no_args_is_help=True)
billing_app = typer.Typer(help="Invoice jobs decided by the billing consumer.", no_args_is_help=True)
app.add_typer(topics_app, name="topics")
app.add_typer(db_app, name="db")
app.add_typer(contract_app, name="contract")
app.add_typer(bulk_app, name="bulk")
app.add_typer(billing_app, name="billing")

console = Console(soft_wrap=True)
errors = Console(stderr=True, soft_wrap=True)

JsonFlag = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


def _settings() -> Settings:
    return Settings()


def _fail(message: str, code: int = 1) -> None:
    errors.print(f"[red]error:[/red] {message}")
    raise typer.Exit(code)


def _print_json(data: object) -> None:
    sys.stdout.write(json.dumps(data, default=str, indent=2) + "\n")


async def _connect(settings: Settings) -> asyncpg.Connection:
    try:
        return await asyncpg.connect(settings.database_url, timeout=10)
    except (TimeoutError, OSError, asyncpg.PostgresError) as error:
        _fail(f"cannot reach PostgreSQL at {settings.database_url}: {error}")
        raise  # unreachable


# --- setup ----------------------------------------------------------------------------------


@topics_app.command("create")
def topics_create() -> None:
    """Create every topic of the contract that does not exist yet (safe to run again)."""
    from suspensions.kafka import create_topics

    settings = _settings()
    created = asyncio.run(create_topics(settings))
    console.print(f"created {len(created)} topic(s): {', '.join(created) or 'none (all existed)'}")


@contract_app.command("asyncapi")
def contract_asyncapi() -> None:
    """Print the contract as an AsyncAPI 3.0 document (JSON); docs/asyncapi.json is this output."""
    from topics.asyncapi import asyncapi_document

    sys.stdout.write(json.dumps(asyncapi_document(), indent=2) + "\n")


@db_app.command("migrate")
def db_migrate() -> None:
    """Apply the pending schema migrations (safe to run again)."""
    from suspensions.db.migrate import migrate

    applied = asyncio.run(migrate(_settings().database_url))
    console.print(f"applied {len(applied)} migration(s): {', '.join(applied) or 'none (up to date)'}")


@app.command("run")
def run(
    workers: Annotated[list[str] | None, typer.Argument(help="triggers, state, billing (default: all)")] = None,
) -> None:
    """Run the named workers until SIGINT/SIGTERM, then stop cleanly."""
    settings = _settings()
    configure_logging(settings.log_level, settings.log_format)
    names = workers or list(WORKER_NAMES)
    unknown = sorted(set(names) - set(WORKER_NAMES))
    if unknown:
        _fail(f"unknown worker(s) {', '.join(unknown)}; choose from {', '.join(WORKER_NAMES)}", 2)

    async def main() -> None:
        stop = asyncio.Event()
        install_signal_handlers(stop)
        await run_workers(settings, names, stop)

    asyncio.run(main())


@app.command("dev")
def dev(
    demo: Annotated[bool, typer.Option("--demo", help="Publish a small scenario and narrate it.")] = False,
    exit_when_done: Annotated[bool, typer.Option(help="Stop after the demo instead of waiting for Ctrl-C.")] = False,
) -> None:
    """Start a local broker and PostgreSQL (unless configured ones answer), migrate, create topics, run every worker."""
    from suspensions.demo import run_dev

    settings = _settings()
    configure_logging("WARNING" if demo else settings.log_level, "console")
    code = asyncio.run(run_dev(settings, demo=demo, exit_when_done=exit_when_done, console=console))
    raise typer.Exit(code)


# --- operator commands ----------------------------------------------------------------------


def _state_dict(state: object) -> dict[str, object]:
    return state.to_record().model_dump(mode="json")  # type: ignore[attr-defined]


def _print_state(state_dict: dict[str, object]) -> None:
    table = Table(show_header=False)
    for key, value in state_dict.items():
        table.add_row(key, ", ".join(value) if isinstance(value, list) else str(value))
    console.print(table)


def _send_one(action: Action, customer: str, space: str, actor: str, note: str | None,
              missed: MissedInvoices | None, wait: bool, timeout: float, as_json: bool) -> None:
    from suspensions.kafka import producer

    settings = _settings()
    try:
        command = operators.manual_command(action, customer, space, actor, note, missed)
    except ValidationError as error:
        _fail(f"invalid command: {error.errors(include_url=False)[0]['msg']} ({error.errors()[0]['loc']})", 2)
        return

    async def main() -> int:
        async with producer(settings) as kafka:
            await operators.publish(kafka, [command])
        result: dict[str, object] = {"command_id": command.command_id, "published": True}
        if not wait:
            if as_json:
                _print_json(result)
            else:
                console.print(f"published {action.value} for {customer} (command {command.command_id})")
            return 0
        conn = await _connect(settings)
        try:
            outcome = await operators.wait_for_command(conn, command.command_id, timeout)
            state = await repository.customer_state(conn, customer)
        finally:
            await conn.close()
        if outcome is None:
            _fail(f"command {command.command_id} was published but not applied within {timeout}s "
                  "(is the state worker running?)", 3)
        result["outcome"] = outcome
        result["state"] = _state_dict(state) if state is not None and state.space_id == space else None
        if as_json:
            _print_json(result)
        else:
            console.print(f"{action.value} {customer}: {outcome}"
                          + (" (rejected: see the deadletter topic)" if outcome == "rejected" else ""))
            if result["state"]:
                _print_state(result["state"])  # type: ignore[arg-type]
        return 4 if outcome == "rejected" else 0

    raise typer.Exit(asyncio.run(main()))


Space = Annotated[str, typer.Option("--space", help="The customer's space (tenant).")]
ActorOption = Annotated[str, typer.Option("--actor", help="Who acts: admin:<id>.")]
Note = Annotated[str | None, typer.Option("--note", help="Why, for the audit trail.")]
Wait = Annotated[bool, typer.Option("--wait", help="Wait until the state worker applied it.")]
Timeout = Annotated[float, typer.Option("--timeout", help="Seconds to wait with --wait.")]


@app.command("suspend")
def suspend(customer: str, space: Space, actor: ActorOption, note: Note = None, wait: Wait = False,
            timeout: Timeout = 30.0, as_json: JsonFlag = False) -> None:
    """Suspend one customer by hand (reason `manual`)."""
    _send_one(Action.SUSPEND, customer, space, actor, note, None, wait, timeout, as_json)


@app.command("lift")
def lift(
    customer: str, space: Space, actor: ActorOption,
    missed_invoices: Annotated[MissedInvoices, typer.Option("--missed-invoices",
                                                            help="Bill or waive the jobs dropped meanwhile.")]
    = MissedInvoices.BILL,
    note: Note = None, wait: Wait = False, timeout: Timeout = 30.0, as_json: JsonFlag = False,
) -> None:
    """Lift a customer's suspension, whatever its reasons."""
    _send_one(Action.LIFT, customer, space, actor, note, missed_invoices, wait, timeout, as_json)


class BulkAction(StrEnum):
    suspend = "suspend"
    lift = "lift"


def _bulk(action: Action, file: Path, actor: str, missed: MissedInvoices | None, wait: bool,
          timeout: float, as_json: bool, batch_size: int) -> None:
    from suspensions.kafka import producer

    settings = _settings()
    try:
        operators.manual_command(action, "probe", "probe", actor)
    except ValidationError:
        _fail(f"invalid --actor {actor!r}: expected admin:<id>", 2)
    if not file.is_file():
        _fail(f"no such file: {file}", 2)

    async def main() -> int:
        summary = operators.BulkSummary(malformed=[])
        command_ids: list[str] = []
        progress = Progress(TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(),
                            TimeRemainingColumn(), console=errors, disable=as_json or not errors.is_terminal)
        async with producer(settings) as kafka:
            with progress, file.open(newline="", encoding="utf-8") as handle:
                task = progress.add_task(f"publishing {action.value} commands", total=file.stat().st_size)
                lines = operators.CountingLines(handle)
                batch = []
                for item in operators.read_bulk_lines(lines):
                    if isinstance(item, operators.MalformedLine):
                        summary.malformed.append(item)  # type: ignore[union-attr]
                        continue
                    batch.append(operators.bulk_command(action, item, actor, missed))
                    if len(batch) >= batch_size:
                        await operators.publish(kafka, batch)
                        command_ids.extend(c.command_id for c in batch)
                        batch = []
                        progress.update(task, completed=lines.bytes_read)
                if batch:
                    await operators.publish(kafka, batch)
                    command_ids.extend(c.command_id for c in batch)
                progress.update(task, completed=file.stat().st_size)
        summary.sent = len(command_ids)
        if wait and command_ids:
            conn = await _connect(settings)
            try:
                outcomes = await operators.wait_for_outcomes(conn, command_ids, timeout)
            finally:
                await conn.close()
            operators.count_outcomes(summary, outcomes, command_ids)
        else:
            summary.unconfirmed = len(command_ids)
        if as_json:
            _print_json(summary.as_dict())
        else:
            table = Table(title=f"bulk {action.value}: {file}")
            for column in ("sent", "applied", "no-op", "rejected", "unconfirmed", "malformed"):
                table.add_column(column, justify="right")
            table.add_row(str(summary.sent), str(summary.applied), str(summary.noop), str(summary.rejected),
                          str(summary.unconfirmed), str(len(summary.malformed or [])))
            console.print(table)
            for bad in summary.malformed or []:
                console.print(f"[yellow]line {bad.line_number}[/yellow]: {bad.error} (not sent)")
            if summary.rejected:
                console.print("rejected commands are on the deadletter topic with their reason")
        if summary.malformed or summary.rejected or (wait and summary.unconfirmed):
            return 1
        return 0

    raise typer.Exit(asyncio.run(main()))


File = Annotated[Path, typer.Option("--file", help="CSV: customer_id,space_id[,note]")]
BulkActor = Annotated[str, typer.Option("--actor", help="Who acts: admin:<id>.")]
BulkWait = Annotated[bool, typer.Option("--wait/--no-wait", help="Wait for the outcome of every line.")]
BatchSize = Annotated[int, typer.Option("--batch-size", min=1, help="Commands per published batch.")]


@bulk_app.command("suspend")
def bulk_suspend(file: File, actor: BulkActor = "admin:bulk", wait: BulkWait = True,
                 timeout: Timeout = 300.0, as_json: JsonFlag = False, batch_size: BatchSize = 1000) -> None:
    """Suspend every customer listed in the file."""
    _bulk(Action.SUSPEND, file, actor, None, wait, timeout, as_json, batch_size)


@bulk_app.command("lift")
def bulk_lift(
    file: File, actor: BulkActor = "admin:bulk",
    missed_invoices: Annotated[MissedInvoices, typer.Option("--missed-invoices")] = MissedInvoices.BILL,
    wait: BulkWait = True, timeout: Timeout = 300.0, as_json: JsonFlag = False, batch_size: BatchSize = 1000,
) -> None:
    """Lift the suspension of every customer listed in the file."""
    _bulk(Action.LIFT, file, actor, missed_invoices, wait, timeout, as_json, batch_size)


# --- queries --------------------------------------------------------------------------------


@app.command("status")
def status(customer: str, space: Annotated[str | None, typer.Option("--space", help="Only within this space.")]
           = None, as_json: JsonFlag = False) -> None:
    """Current state of one customer: suspended or not, why, and since when."""
    async def main() -> int:
        conn = await _connect(_settings())
        try:
            state = await repository.customer_state(conn, customer)
        finally:
            await conn.close()
        if state is None or (space is not None and state.space_id != space):
            if as_json:
                _print_json(None)
            else:
                console.print(f"customer {customer} has no suspension state (never suspended)")
            return 1
        if as_json:
            _print_json(_state_dict(state))
        else:
            if state.suspended:
                console.print(f"[bold red]{customer} is suspended[/bold red] since {state.suspended_at} "
                              f"(reasons: {', '.join(state.reasons)})")
            else:
                console.print(f"[bold green]{customer} is active[/bold green]"
                              + (f" (lifted at {state.lifted_at})" if state.lifted_at else ""))
            _print_state(_state_dict(state))
        return 0

    raise typer.Exit(asyncio.run(main()))


@app.command("history")
def history(customer: str, space: Annotated[str | None, typer.Option("--space", help="Only within this space.")]
            = None, as_json: JsonFlag = False) -> None:
    """Every command applied to one customer: when, who, why, and what caused it."""
    async def main() -> int:
        conn = await _connect(_settings())
        try:
            rows = await repository.customer_history(conn, customer)
        finally:
            await conn.close()
        entries = [dict(row) for row in rows if space is None or row["space_id"] == space]
        if as_json:
            _print_json(entries)
            return 0
        if not entries:
            console.print(f"no history for customer {customer}")
            return 0
        table = Table(title=f"history of {customer}")
        for column in ("applied at", "action", "reason", "actor", "outcome", "version", "cause", "note"):
            table.add_column(column)
        for e in entries:
            cause = f"{e['cause_topic']}:{e['cause_event_id']}" if e["cause_topic"] else ""
            action = e["action"] + (f" ({e['missed_invoices']})" if e["missed_invoices"] else "")
            table.add_row(str(e["applied_at"]), action, e["reason"], e["actor"], e["outcome"],
                          str(e["version_after"]), cause, e["note"] or "")
        console.print(table)
        return 0

    raise typer.Exit(asyncio.run(main()))


@app.command("list")
def list_customers(
    space: Annotated[str, typer.Option("--space", help="The space (tenant) to list.")],
    suspended: Annotated[bool, typer.Option("--suspended", help="Only suspended customers.")] = False,
    limit: Annotated[int, typer.Option("--limit", min=1)] = 1000,
    as_json: JsonFlag = False,
) -> None:
    """Customers of one space with their suspension state."""
    async def main() -> None:
        conn = await _connect(_settings())
        try:
            states = await repository.space_states(conn, space, suspended_only=suspended, limit=limit)
        finally:
            await conn.close()
        if as_json:
            _print_json([_state_dict(state) for state in states])
            return
        table = Table(title=f"customers of {space}" + (" (suspended)" if suspended else ""))
        for column in ("customer", "suspended", "reasons", "suspended at", "lifted at", "version"):
            table.add_column(column)
        for s in states:
            table.add_row(s.customer_id, "yes" if s.suspended else "no", ", ".join(s.reasons),
                          str(s.suspended_at or ""), str(s.lifted_at or ""), str(s.version))
        console.print(table)

    asyncio.run(main())


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
        conn = await _connect(_settings())
        try:
            jobs = await repository.invoice_decisions(conn, space_id=space, customer_id=customer,
                                                      statuses=statuses, limit=limit)
            totals = await repository.invoice_totals(conn, space_id=space, customer_id=customer,
                                                     statuses=statuses)
        finally:
            await conn.close()
        if as_json:
            _print_json({"jobs": [dict(j) for j in jobs],
                         "totals": [{**dict(t), "total": str(t["total"])} for t in totals]})
            return
        table = Table(title="invoice jobs not billed at their cycle")
        for column in ("job", "customer", "space", "contract", "amount", "status", "suspension v", "decided at"):
            table.add_column(column)
        for j in jobs:
            table.add_row(j["job_id"], j["customer_id"], j["space_id"], j["contract_id"],
                          f"{j['amount']} {j['currency']}", j["status"], str(j["suspension_version"] or ""),
                          str(j["decided_at"]))
        console.print(table)
        summary = Table(title="totals")
        for column in ("status", "currency", "jobs", "total"):
            summary.add_column(column)
        for t in totals:
            summary.add_row(t["status"], t["currency"], str(t["jobs"]), str(t["total"]))
        console.print(summary)

    asyncio.run(main())


# --- operations -----------------------------------------------------------------------------


def _lag_table(reports: list) -> Table:  # type: ignore[type-arg]
    table = Table(title="consumer lag")
    for column in ("group", "status", "topic", "partition", "committed", "log end", "lag", "time lag s"):
        table.add_column(column, justify="right" if column in ("partition", "committed", "log end", "lag",
                                                                "time lag s") else "left")
    colours = {"OK": "green", "WARN": "yellow"}
    for report in reports:
        status = report.status.name
        styled = f"[{colours.get(status, 'red')}]{status}[/]"
        if not report.partitions:
            table.add_row(report.group, styled, "(no committed offsets)", "", "", "", "", "")
        for index, part in enumerate(report.partitions):
            table.add_row(report.group if index == 0 else "", styled if index == 0 else part["status"],
                          part["topic"], str(part["partition"]),
                          "-" if part["committed"] is None else str(part["committed"]), str(part["log_end"]),
                          str(part["lag"]), f"{part['time_lag_s']:.1f}")
    return table


@app.command("lag")
def lag(
    group: Annotated[list[str] | None, typer.Option("--group", help="A consumer group (repeatable); "
                                                       "default: the service's own groups.")] = None,
    window: Annotated[float, typer.Option("--window", min=0, help="Seconds over which to judge the trend.")] = 6.0,
    samples: Annotated[int, typer.Option("--samples", min=1, help="Samples taken across the window.")] = 3,
    watch: Annotated[bool, typer.Option("--watch", help="Refresh until Ctrl-C.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Lag per group, topic and partition (records and time) with a Burrow-style status.

    Exit code 1 when any group is not OK, so it serves as a check in scripts.
    """
    from rich.live import Live

    from suspensions.lag import Status, measure, service_groups

    settings = _settings()
    own = service_groups(settings)
    groups: dict[str, tuple[str, ...] | None] = {g: own.get(g) for g in group} if group else dict(own)

    async def once() -> list:  # type: ignore[type-arg]
        return await measure(settings, groups, window, samples)

    def report(reports: list) -> int:  # type: ignore[type-arg]
        if as_json:
            _print_json([r.as_dict() for r in reports])
        return 0 if all(r.status is Status.OK for r in reports) else 1

    if not watch:
        reports = asyncio.run(once())
        if not as_json:
            console.print(_lag_table(reports))
        raise typer.Exit(report(reports))

    async def loop() -> None:
        with Live(console=console, auto_refresh=False) as live:
            while True:
                reports = await once()
                if as_json:
                    report(reports)
                else:
                    live.update(_lag_table(reports), refresh=True)

    try:
        asyncio.run(loop())
    except KeyboardInterrupt:
        raise typer.Exit(0) from None
