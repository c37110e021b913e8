"""What every command group of the CLI shares: settings, output, errors and a database session."""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, NoReturn

import asyncpg
import typer
from rich.console import Console
from rich.table import Table

from models import CustomerState
from workers.runtime.config import Settings

console = Console(soft_wrap=True)
errors = Console(stderr=True, soft_wrap=True)

JsonFlag = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


def settings() -> Settings:
    return Settings()


def fail(message: str, code: int = 1) -> NoReturn:
    errors.print(f"[red]error:[/red] {message}")
    raise typer.Exit(code)


def print_json(data: object) -> None:
    sys.stdout.write(json.dumps(data, default=str, indent=2) + "\n")


@asynccontextmanager
async def database(config: Settings) -> AsyncIterator[asyncpg.Connection]:
    """One connection for one command; an unreachable database is a one-line error, exit 1."""
    try:
        conn = await asyncpg.connect(config.database_url, timeout=10)
    except (TimeoutError, OSError, asyncpg.PostgresError) as error:
        fail(f"cannot reach PostgreSQL at {config.database_location}: {error}")
    try:
        yield conn
    finally:
        await conn.close()


def state_dict(state: CustomerState) -> dict[str, object]:
    return state.to_record().model_dump(mode="json")


def print_state(fields: dict[str, object]) -> None:
    table = Table(show_header=False)
    for key, value in fields.items():
        table.add_row(key, ", ".join(value) if isinstance(value, list) else str(value))
    console.print(table)
