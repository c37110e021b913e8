"""What every command group of the CLI shares: settings, output, errors and a database session."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from typing import Annotated, Any, NoReturn, TypeVar

import asyncpg
import typer
from aiokafka.errors import KafkaError
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from models import CustomerState
from workers.runtime.broker_check import BrokerUnavailable
from workers.runtime.config import Settings, SettingsError
from workers.runtime.db.pool import DATABASE_UNAVAILABLE, describe

T = TypeVar("T")

# Off a terminal (a pipe, a log), rich assumes 80 columns and folds tables past reading.
console = Console(soft_wrap=True) if sys.stdout.isatty() else Console(soft_wrap=True, width=200)
errors = Console(stderr=True, soft_wrap=True)

JsonFlag = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


def settings() -> Settings:
    """The configuration from the environment; a setting that cannot work is one line per problem, exit 2
    (the message names the variable, never its value)."""
    try:
        return Settings()
    except SettingsError as error:
        fail(str(error), 2)
    except ValidationError as error:
        problems = "; ".join(
            ("SUSPENSIONS_" + "_".join(str(part) for part in item["loc"]).upper() + ": " if item["loc"] else "")
            + item["msg"].removeprefix("Value error, ") for item in error.errors(include_url=False))
        fail(f"invalid configuration: {problems}", 2)


def run_async(main: Coroutine[Any, Any, T]) -> T:
    """Run a command's coroutine; a broker that cannot be used is one line naming it and the cause, exit 2;
    a dependency that failed or did not answer within its timeout midway is one line too, exit 1 (each
    write of a command is one transaction or one publish: nothing is left half-done)."""
    try:
        return asyncio.run(main)
    except BrokerUnavailable as error:
        fail(str(error), 2)
    except KafkaError as error:
        fail(f"the broker did not answer in time or failed: {describe(error)}")
    except DATABASE_UNAVAILABLE as error:
        fail(f"PostgreSQL did not answer in time or failed: {describe(error)}")


def fail(message: str, code: int = 1) -> NoReturn:
    errors.print(f"[red]error:[/red] {message}")
    raise typer.Exit(code)


def print_json(data: object) -> None:
    sys.stdout.write(json.dumps(data, default=str, indent=2) + "\n")


@asynccontextmanager
async def database(config: Settings) -> AsyncIterator[asyncpg.Connection]:
    """One connection for one command; an unreachable database is a one-line error, exit 1."""
    try:
        conn = await asyncpg.connect(**config.database_connect_args())
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
        table.add_row(key, ", ".join(_shown(item) for item in value) if isinstance(value, list) else str(value))
    console.print(table)


def _shown(item: object) -> str:
    """A list item of a state: a reason, or a pending schedule."""
    if isinstance(item, dict):
        return f"{item['action']} at {item['at']} (schedule {item['schedule_id']})"
    return str(item)
