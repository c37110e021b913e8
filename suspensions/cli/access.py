"""API tokens for the operator API and console: created (shown once), listed, revoked."""

from __future__ import annotations

from typing import Annotated

import asyncpg
import typer
from rich.table import Table

from models.moments import shown
from suspensions import access
from suspensions.access import AccessError, Role
from suspensions.cli.common import JsonFlag, console, database, fail, print_json, run_async, settings

tokens_app = typer.Typer(help="API tokens of the operator API and console.", no_args_is_help=True)


@tokens_app.command("create")
def create(
    name: Annotated[str, typer.Option("--name", help="Who holds it; commands record the actor admin:<name>.")],
    role: Annotated[str, typer.Option("--role", help="viewer, operator or admin.")],
    space: Annotated[list[str], typer.Option("--space", help="A space it may see (repeatable).")],
    as_json: JsonFlag = False,
) -> None:
    """Create a token and print it once: PostgreSQL keeps only its hash."""
    try:
        chosen = Role.named(role)
    except KeyError:
        fail(f"invalid --role {role!r}: viewer, operator or admin", 2)

    async def main() -> str:
        async with database(settings()) as conn:
            try:
                return await access.create_token(conn, name, chosen, space)
            except AccessError as error:
                fail(str(error), 2)

    token = run_async(main())
    if as_json:
        print_json({"token": token, "name": name, "role": chosen.name.lower(), "spaces": sorted(set(space))})
    else:
        console.print(f"token for {name} ({chosen.name.lower()}, spaces {', '.join(sorted(set(space)))}):")
        console.print(token, markup=False, highlight=False)
        console.print("[yellow]shown once: store it now[/yellow]")


@tokens_app.command("list")
def list_tokens(as_json: JsonFlag = False) -> None:
    """Every token's name, role, spaces and whether it is revoked (never the token)."""
    async def main() -> list[asyncpg.Record]:
        async with database(settings()) as conn:
            return await access.list_tokens(conn)

    rows = run_async(main())
    if as_json:
        print_json([dict(row) for row in rows])
        return
    table = Table(title="API tokens")
    for column in ("name", "role", "spaces", "created", "revoked"):
        table.add_column(column)
    for row in rows:
        table.add_row(row["name"], row["role"], ", ".join(row["spaces"]), shown(row["created_at"]),
                      shown(row["revoked_at"]))
    console.print(table)


@tokens_app.command("revoke")
def revoke(name: str) -> None:
    """Revoke a token: it stops working at once on every API process, and its console sessions end."""
    async def main() -> bool:
        async with database(settings()) as conn:
            return await access.revoke_token(conn, name)

    if not run_async(main()):
        fail(f"no live token named {name!r}", 1)
    console.print(f"revoked {name}")


def register(app: typer.Typer) -> None:
    app.add_typer(tokens_app, name="tokens")
