"""Operator actions: suspend and lift one customer, or many from a CSV file.

The CLI is one more upstream: it publishes commands and never writes suspension state itself.
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn
from rich.table import Table

from models import Action, MissedInvoices, SuspensionCommand, describe_invalid
from models.moments import MomentError
from suspensions import operators, queries
from suspensions.cli.common import (
    JsonFlag,
    console,
    database,
    errors,
    fail,
    print_json,
    print_state,
    run_async,
    settings,
    state_dict,
)
from suspensions.zones import UTC_ZONE, space_zone
from workers.runtime.kafka import producer
from workers.state.transitions import Outcome

Space = Annotated[str, typer.Option("--space", help="The customer's space (tenant).")]
ActorOption = Annotated[str, typer.Option("--actor", help="Who acts: admin:<id>.")]
Note = Annotated[str | None, typer.Option("--note", help="Why, for the audit trail.")]
Wait = Annotated[bool, typer.Option("--wait", help="Wait until the state worker applied it.")]
Timeout = Annotated[float, typer.Option("--timeout", help="Seconds to wait with --wait.")]
MissedOption = Annotated[MissedInvoices, typer.Option("--missed-invoices",
                                                      help="Bill or waive the jobs dropped meanwhile.")]
At = Annotated[str | None, typer.Option(
    "--at", help="Schedule it: ISO 8601 with an offset, or a local date or date-time read in the space's time "
                 "zone (a date alone is 00:00 local).")]
Until = Annotated[str | None, typer.Option("--until", help="Also schedule the lift at this moment (same format).")]

bulk_app = typer.Typer(help="Suspend or lift many customers from a CSV file.", no_args_is_help=True)


def _send_one(action: Action, customer: str, space: str, actor: str, note: str | None,
              missed: MissedInvoices | None, wait: bool, timeout: float, as_json: bool,
              at: str | None = None, until: str | None = None, schedule_id: str | None = None) -> None:
    config = settings()

    async def main() -> int:
        tz = await space_zone(config, space) if at or until else UTC_ZONE
        try:
            moments = operators.schedule_moments(at, until, tz)
            command = operators.manual_command(action, customer, space, actor, note, missed,
                                               at=moments.at, until=moments.until, schedule_id=schedule_id)
        except MomentError as error:
            fail(str(error), 2)
        except ValidationError as error:
            fail(f"invalid command: {describe_invalid(error)}", 2)
        async with producer(config) as kafka:
            await operators.publish(kafka, [command])
        if not wait:
            if as_json:
                print_json({"command_id": command.command_id, "published": True,
                            "scheduled": operators.scheduled_summary(command, tz)})
            else:
                console.print(f"published {action.value} for {customer} (command {command.command_id})")
                for line in operators.scheduled_summary(command, tz):
                    console.print(f"  scheduled {line['action']} at {line['when']} (schedule {line['schedule_id']})")
            return 0
        async with database(config) as conn:
            outcome = await operators.wait_for_command(conn, command.command_id, timeout)
            state = await queries.customer_state(conn, customer)
        if outcome is None:
            fail(f"command {command.command_id} was published but not applied within {timeout}s "
                 "(is the state worker running?)", 3)
        return _report(command, outcome, state_dict(state) if state is not None and state.space_id == space else None,
                       as_json)

    raise typer.Exit(run_async(main()))


def _report(command: SuspensionCommand, outcome: Outcome, state: dict[str, object] | None, as_json: bool) -> int:
    if as_json:
        print_json({"command_id": command.command_id, "published": True, "outcome": outcome, "state": state})
    else:
        console.print(f"{command.action.value} {command.customer_id}: {outcome}"
                      + (" (rejected: see the deadletter topic)" if outcome is Outcome.REJECTED else ""))
        if state:
            print_state(state)
    return 4 if outcome is Outcome.REJECTED else 0


def suspend(customer: str, space: Space, actor: ActorOption, note: Note = None, wait: Wait = False,
            timeout: Timeout = 30.0, as_json: JsonFlag = False, at: At = None, until: Until = None) -> None:
    """Suspend one customer by hand (reason `manual`), now or --at a moment, and lift it --until one."""
    _send_one(Action.SUSPEND, customer, space, actor, note, None, wait, timeout, as_json, at, until)


def lift(customer: str, space: Space, actor: ActorOption, missed_invoices: MissedOption = MissedInvoices.BILL,
         note: Note = None, wait: Wait = False, timeout: Timeout = 30.0, as_json: JsonFlag = False,
         at: At = None) -> None:
    """Lift a customer's suspension, whatever its reasons, now or --at a moment."""
    _send_one(Action.LIFT, customer, space, actor, note, missed_invoices, wait, timeout, as_json, at)


schedule_app = typer.Typer(help="Scheduled suspensions and lifts.", no_args_is_help=True)


@schedule_app.command("list")
def schedule_list(space: Space, as_json: JsonFlag = False) -> None:
    """The space's pending schedules, soonest first, in UTC and the space's local time."""
    config = settings()

    async def main() -> None:
        tz = await space_zone(config, space)
        async with database(config) as conn:
            rows = await queries.pending_schedules(conn, space)
        entries = [operators.schedule_view(row, tz) for row in rows]
        if as_json:
            print_json([entry.model_dump(mode="json") for entry in entries])
            return
        table = Table(title=f"pending schedules of {space} ({tz.key})")
        for column in ("schedule", "customer", "action", "when", "missed invoices", "actor", "note"):
            table.add_column(column)
        for e in entries:
            table.add_row(e.schedule_id, e.customer_id, e.action, e.when, e.missed_invoices or "", e.actor,
                          e.note or "")
        console.print(table)

    run_async(main())


@schedule_app.command("cancel")
def schedule_cancel(schedule_id: str, actor: ActorOption, note: Note = None, wait: Wait = False,
                    timeout: Timeout = 30.0, as_json: JsonFlag = False) -> None:
    """Cancel a pending schedule (recorded in the customer's history)."""
    config = settings()

    async def find() -> tuple[str, str]:
        async with database(config) as conn:
            row = await queries.schedule(conn, schedule_id)
        if row is None:
            fail(f"no schedule {schedule_id}", 1)
        if row["status"] != "pending":
            fail(f"schedule {schedule_id} is {row['status']} already", 1)
        return row["customer_id"], row["space_id"]

    customer, space = run_async(find())
    _send_one(Action.CANCEL_SCHEDULE, customer, space, actor, note, None, wait, timeout, as_json,
              schedule_id=schedule_id)


# The human table's words for the outcomes (--json keeps the contract's: changed, noop, rejected).
SHOWN_OUTCOMES = {Outcome.CHANGED: "applied", Outcome.NOOP: "no-op", Outcome.REJECTED: "rejected"}


def _bulk(action: Action, file: Path, actor: str, missed: MissedInvoices | None, wait: bool,
          timeout: float, as_json: bool, batch_size: int) -> None:
    config = settings()
    try:
        operators.manual_command(action, "probe", "probe", actor)
    except ValidationError:
        fail(f"invalid --actor {actor!r}: expected admin:<id>", 2)
    if not file.is_file():
        fail(f"no such file: {file}", 2)

    async def main() -> int:
        progress = Progress(TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(),
                            TimeRemainingColumn(), console=errors, disable=as_json or not errors.is_terminal)
        async with AsyncExitStack() as stack:
            # Connected before anything is published: a run that cannot confirm its outcomes sends nothing.
            conn = await stack.enter_async_context(database(config)) if wait else None
            kafka = await stack.enter_async_context(producer(config))
            with progress, file.open(newline="", encoding="utf-8") as handle:
                task = progress.add_task(f"publishing {action.value} commands", total=file.stat().st_size)
                lines = operators.CountingLines(handle)

                async def published(_: int) -> None:
                    progress.update(task, completed=lines.bytes_read)

                run = await operators.run_bulk(
                    operators.read_bulk_lines(lines), action, actor, missed, producer=kafka, batch_size=batch_size,
                    connections=operators.OneConnection(conn) if conn is not None else None, timeout_s=timeout,
                    published=published)
                progress.update(task, completed=file.stat().st_size)
        counts = run.counts()
        _print_summary(action, file, run, counts, as_json)
        if run.malformed or counts[Outcome.REJECTED] or (wait and counts[operators.UNCONFIRMED]):
            return 1
        return 0

    raise typer.Exit(run_async(main()))


def _print_summary(action: Action, file: Path, run: operators.BulkRun, counts: dict[str, int],
                   as_json: bool) -> None:
    if as_json:
        print_json({"sent": len(run.sent), **counts,
                    "malformed": [{"line": m.line_number, "error": m.error} for m in run.malformed]})
        return
    table = Table(title=f"bulk {action.value}: {file}")
    columns = {"sent": len(run.sent), **{SHOWN_OUTCOMES[outcome]: counts[outcome] for outcome in SHOWN_OUTCOMES},
               "unconfirmed": counts[operators.UNCONFIRMED], "malformed": len(run.malformed)}
    for column in columns:
        table.add_column(column, justify="right")
    table.add_row(*(str(value) for value in columns.values()))
    console.print(table)
    for bad in run.malformed:
        console.print(f"[yellow]line {bad.line_number}[/yellow]: {bad.error} (not sent)")
    if counts[Outcome.REJECTED]:
        console.print("rejected commands are on the deadletter topic with their reason")


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


def register(app: typer.Typer) -> None:
    app.command("suspend")(suspend)
    app.command("lift")(lift)
    app.add_typer(bulk_app, name="bulk")
    app.add_typer(schedule_app, name="schedule")
