"""Webhook endpoints of a space: registered (the secret shown once), listed, removed, their secret rotated,
their deliveries shown and replayed. The `webhooks` worker delivers (docs/webhooks.md)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import asyncpg
import typer
from rich.table import Table

from models.moments import MomentError, parse_when, shown
from suspensions.cli.common import JsonFlag, console, database, fail, print_json, run_async, settings
from suspensions.zones import UTC_ZONE, space_zone
from workers.webhooks import store
from workers.webhooks.store import EndpointError

webhooks_app = typer.Typer(help="Webhook endpoints: lifecycle events delivered over HTTP.", no_args_is_help=True)


@webhooks_app.command("add")
def add(
    space: Annotated[str, typer.Option("--space", help="The space whose lifecycle events it receives.")],
    url: Annotated[str, typer.Option("--url", help="Where to POST them: https, a public address.")],
    event: Annotated[list[str] | None, typer.Option(
        "--event", help="A lifecycle event type to send (repeatable; every type when none).")] = None,
    description: Annotated[str | None, typer.Option("--description", help="What it is, for people.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Register an endpoint and print its id and signing secret, once (only PostgreSQL keeps it)."""
    config = settings()

    async def main() -> tuple[asyncpg.Record, str]:
        async with database(config) as conn:
            try:
                return await store.add_endpoint(conn, space, url, event or [], description,
                                                config.webhooks_allow_private, datetime.now(UTC))
            except EndpointError as error:
                fail(str(error), 2)

    row, secret = run_async(main())
    if as_json:
        print_json({"id": row["endpoint_id"], "secret": secret, "url": row["url"], "space_id": row["space_id"],
                    "events": list(row["event_types"])})
        return
    console.print(f"endpoint {row['endpoint_id']} for {row['space_id']}: {row['url']}", markup=False)
    console.print(f"events: {', '.join(row['event_types']) or 'every type'}")
    console.print("signing secret:")
    console.print(secret, markup=False, highlight=False)
    console.print("[yellow]shown once: store it now[/yellow]")


@webhooks_app.command("list")
def list_endpoints(
    space: Annotated[str | None, typer.Option("--space", help="Only this space's (every space's by default).")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Endpoints with their health: pending deliveries, the oldest one, the last success (never the secret)."""
    async def main() -> list[asyncpg.Record]:
        async with database(settings()) as conn:
            return await store.endpoints(conn, space)

    rows = run_async(main())
    if as_json:
        print_json([store.endpoint_fields(row) for row in rows])
        return
    table = Table(title="Webhook endpoints")
    for column in ("id", "space", "url", "events", "health", "pending", "oldest pending", "last delivered"):
        table.add_column(column)
    for row in rows:
        state = store.health(row) + (f" ({row['disabled_reason']})" if row["disabled_reason"] else "")
        table.add_row(row["endpoint_id"], row["space_id"], row["url"], ", ".join(row["event_types"]) or "all",
                      state, str(row["pending"]), shown(row["oldest_pending_at"]), shown(row["last_delivered_at"]))
    console.print(table)


@webhooks_app.command("remove")
def remove(endpoint_id: Annotated[str, typer.Argument(metavar="ID")]) -> None:
    """Remove an endpoint: nothing more is sent to it; its deliveries and their log go too."""
    async def main() -> bool:
        async with database(settings()) as conn:
            return await store.remove_endpoint(conn, endpoint_id)

    if not run_async(main()):
        fail(f"no webhook endpoint {endpoint_id!r}", 1)
    console.print(f"removed {endpoint_id}")


@webhooks_app.command("enable")
def enable(endpoint_id: Annotated[str, typer.Argument(metavar="ID")]) -> None:
    """Enable an endpoint disabled after 410 Gone or days of failures; its pending deliveries go out again."""
    async def main() -> bool:
        async with database(settings()) as conn:
            return await store.enable_endpoint(conn, endpoint_id)

    if not run_async(main()):
        fail(f"no webhook endpoint {endpoint_id!r}", 1)
    console.print(f"enabled {endpoint_id}")


@webhooks_app.command("rotate-secret")
def rotate_secret(endpoint_id: Annotated[str, typer.Argument(metavar="ID")], as_json: JsonFlag = False) -> None:
    """A new signing secret, printed once; the old one keeps signing beside it for 24 hours
    (SUSPENSIONS_WEBHOOKS_SECRET_OVERLAP)."""
    config = settings()

    async def main() -> str | None:
        async with database(config) as conn:
            return await store.rotate_secret(conn, endpoint_id, config.webhooks_secret_overlap, datetime.now(UTC))

    secret = run_async(main())
    if secret is None:
        fail(f"no webhook endpoint {endpoint_id!r}", 1)
    if as_json:
        print_json({"id": endpoint_id, "secret": secret})
        return
    console.print(f"new signing secret of {endpoint_id} (the old one signs too for "
                  f"{config.webhooks_secret_overlap}):")
    console.print(secret, markup=False, highlight=False)


@webhooks_app.command("deliveries")
def deliveries(
    endpoint_id: Annotated[str, typer.Argument(metavar="ID")],
    limit: Annotated[int, typer.Option("--limit", min=1, max=10_000, help="How many, newest first.")] = 50,
    as_json: JsonFlag = False,
) -> None:
    """The endpoint's latest deliveries: status, attempts, the last attempt's status code and latency."""
    async def main() -> list[asyncpg.Record] | None:
        async with database(settings()) as conn:
            if await store.endpoint(conn, endpoint_id) is None:
                return None
            return await store.deliveries(conn, endpoint_id, limit)

    rows = run_async(main())
    if rows is None:
        fail(f"no webhook endpoint {endpoint_id!r}", 1)
    if as_json:
        print_json([store.delivery_fields(row) for row in rows])
        return
    table = Table(title=f"Deliveries of {endpoint_id}")
    for column in ("event", "type", "customer", "status", "attempts", "code", "latency ms", "last attempt", "error"):
        table.add_column(column)
    for row in rows:
        table.add_row(row["event_id"] + (f" (replay {row['replay']})" if row["replay"] else ""), row["event_type"],
                      row["customer_id"], row["status"], str(row["attempts"]), str(row["status_code"] or ""),
                      f"{row['latency_ms']:.0f}" if row["latency_ms"] is not None else "", shown(row["attempted_at"]),
                      row["last_error"] or "")
    console.print(table)


@webhooks_app.command("replay")
def replay(
    endpoint_id: Annotated[str, typer.Argument(metavar="ID")],
    since: Annotated[str, typer.Option("--since", help="ISO 8601; without an offset, in the space's time zone.")],
    as_json: JsonFlag = False,
) -> None:
    """Send again every event of the endpoint since a moment (as far back as deliveries are kept), in order,
    with the same webhook-id as the first time."""
    config = settings()

    async def main() -> int | None:
        async with database(config) as conn:
            row = await store.endpoint(conn, endpoint_id)
            if row is None:
                return None
            zone = await space_zone(config, row["space_id"]) if _local(since) else UTC_ZONE
            try:
                moment = parse_when(since, zone)
            except MomentError as error:
                fail(str(error), 2)
            return await store.replay(conn, endpoint_id, moment, datetime.now(UTC))

    count = run_async(main())
    if count is None:
        fail(f"no webhook endpoint {endpoint_id!r}", 1)
    if as_json:
        print_json({"id": endpoint_id, "replayed": count})
    else:
        console.print(f"{count} event(s) of {endpoint_id} to be sent again")


def _local(text: str) -> bool:
    """A WHEN without an offset (read in the space's zone)."""
    try:
        return datetime.fromisoformat(text.strip().replace("Z", "+00:00")).tzinfo is None
    except ValueError:
        return False


def register(app: typer.Typer) -> None:
    app.add_typer(webhooks_app, name="webhooks")
