"""Setting up and running the service: topics, schema, contract, workers, the local stack."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from models import utc_iso
from models.moments import shown
from suspensions.cli.common import JsonFlag, console, database, fail, print_json, run_async, settings
from suspensions.cli.recovery import db_check, db_rebuild
from suspensions.runner import API, RUNNABLE_NAMES
from workers.runtime import retention
from workers.runtime.collector import settle_collector
from workers.runtime.logs import configure_logging

topics_app = typer.Typer(help="Kafka topics of the contract.", no_args_is_help=True)
db_app = typer.Typer(help="The PostgreSQL schema, and what it keeps.", no_args_is_help=True)
contract_app = typer.Typer(help="The published wire contract.", no_args_is_help=True)
db_app.command("check")(db_check)
db_app.command("rebuild")(db_rebuild)


@topics_app.command("create")
def topics_create() -> None:
    """Create every topic of the contract that does not exist yet (safe to run again)."""
    from workers.runtime.kafka import create_topics

    created = run_async(create_topics(settings()))
    console.print(f"created {len(created)} topic(s): {', '.join(created) or 'none (all existed)'}")


@contract_app.command("asyncapi")
def contract_asyncapi() -> None:
    """Print the contract as an AsyncAPI 3.0 document (JSON); docs/asyncapi.json is this output."""
    from suspensions.contract import asyncapi_document

    sys.stdout.write(json.dumps(asyncapi_document(), indent=2) + "\n")


@contract_app.command("openapi")
def contract_openapi() -> None:
    """Print the operator API's OpenAPI 3.1 document (JSON); docs/openapi.json is this output."""
    from suspensions.api.app import build_app
    from suspensions.api.service import Operations
    from workers.runtime.metrics import Metrics

    async def no_operations() -> Operations:
        raise RuntimeError("the document needs no connection")

    async def nothing_to_close() -> None:
        return None

    app = build_app(no_operations, Metrics(), nothing_to_close)
    sys.stdout.write(json.dumps(app.openapi(), indent=2) + "\n")


@contract_app.command("schemas")
def contract_schemas(
    folder: Annotated[Path, typer.Argument(help="Where to write one JSON file per topic.")] = Path("docs/schemas"),
) -> None:
    """Write the JSON Schema of every topic's records (key, version, value); docs/schemas is this output."""
    from topics.schemas import write_documents

    written = write_documents(folder)
    console.print(f"wrote {len(written)} schema(s) to {folder}")


@db_app.command("retention")
def db_retention(as_json: JsonFlag = False) -> None:
    """Each table that retention prunes: its size, rows, oldest removable row and the rule that applies."""
    async def main() -> list[retention.TableReport]:
        async with database(settings()) as conn:
            return await retention.report(conn, settings())

    reports = run_async(main())
    if as_json:
        print_json([dataclasses.asdict(entry) | {"oldest": utc_iso(entry.oldest) if entry.oldest else None}
                    for entry in reports])
        return
    table = Table(title="retention (docs/operations.md)")
    for column in ("table", "pruned by", "size", "rows", "oldest", "rule"):
        table.add_column(column)
    for entry in reports:
        name = entry.table + (f" ({entry.partitions} partitions)" if entry.partitions else "")
        table.add_row(name, entry.owner, f"{entry.bytes / 1e6:.1f} MB", f"~{entry.rows:,}", shown(entry.oldest),
                      entry.rule)
    console.print(table)


@db_app.command("migrate")
def db_migrate() -> None:
    """Apply the pending schema migrations (safe to run again)."""
    from workers.runtime.db.migrate import migrate

    applied = run_async(migrate(**settings().database_login_args()))
    console.print(f"applied {len(applied)} migration(s): {', '.join(applied) or 'none (up to date)'}")


def run(
    workers: Annotated[list[str] | None, typer.Argument(
        help=f"{', '.join(RUNNABLE_NAMES)} (default: all; api is the operator API and console)")] = None,
    processes: Annotated[str, typer.Option(
        "--processes", help="Processes per worker: a number, or auto for the machine's cores (default 1: README, "
                            "'Processes per worker').")] = "1",
    parent_pid: Annotated[int | None, typer.Option("--parent-pid", hidden=True,
                                                   help="Set by the first process for the ones it starts.")] = None,
) -> None:
    """Run the named workers (and the operator API) until SIGINT/SIGTERM, then stop cleanly."""
    from suspensions.runner import install_signal_handlers, process_count, run_processes

    config = settings()
    configure_logging(config.log_level, config.log_format)
    names = workers or list(RUNNABLE_NAMES)
    unknown = sorted(set(names) - set(RUNNABLE_NAMES))
    if unknown:
        fail(f"unknown worker(s) {', '.join(unknown)}; choose from {', '.join(RUNNABLE_NAMES)}", 2)
    try:
        count = process_count(processes)
    except ValueError:
        fail(f"--processes takes a number of at least 1, or auto; not {processes!r}", 2)

    async def main() -> int:
        stop = asyncio.Event()
        install_signal_handlers(stop)
        return await run_processes(config, names, count, stop, parent_pid)

    settle_collector(serves_requests=API in names)
    code = run_async(main())
    if code:
        raise typer.Exit(code)


def dev(
    demo: Annotated[bool, typer.Option("--demo", help="Publish a small scenario and narrate it.")] = False,
    exit_when_done: Annotated[bool, typer.Option(help="Stop after the demo instead of waiting for Ctrl-C.")] = False,
) -> None:
    """Start a local broker and PostgreSQL (unless configured ones answer), migrate, create topics, run every worker."""
    from suspensions.demo import run_dev

    config = settings()
    configure_logging("WARNING" if demo else config.log_level, "console")
    code = run_async(run_dev(config, demo=demo, exit_when_done=exit_when_done, console=console))
    raise typer.Exit(code)


def register(app: typer.Typer) -> None:
    app.add_typer(topics_app, name="topics")
    app.add_typer(db_app, name="db")
    app.add_typer(contract_app, name="contract")
    app.command("run")(run)
    app.command("dev")(dev)
