"""Operations: consumer lag with a Burrow-style status."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer
from rich.live import Live
from rich.table import Table

from suspensions.cli.common import JsonFlag, console, print_json, settings
from suspensions.lag import GroupReport, Status, measure
from workers.registry import consumer_groups

NUMERIC_COLUMNS = ("partition", "committed", "log end", "lag", "time lag s")


def _lag_table(reports: list[GroupReport]) -> Table:
    table = Table(title="consumer lag")
    for column in ("group", "status", "topic", *NUMERIC_COLUMNS):
        table.add_column(column, justify="right" if column in NUMERIC_COLUMNS else "left")
    colours = {"OK": "green", "WARN": "yellow"}
    for report in reports:
        status = report.status.name
        styled = f"[{colours.get(status, 'red')}]{status}[/]"
        if not report.partitions:
            table.add_row(report.group, styled, "(no committed offsets)", "", "", "", "", "")
        for index, part in enumerate(report.partitions):
            table.add_row(report.group if index == 0 else "", styled if index == 0 else str(part["status"]),
                          str(part["topic"]), str(part["partition"]),
                          "-" if part["committed"] is None else str(part["committed"]), str(part["log_end"]),
                          str(part["lag"]), f"{part['time_lag_s']:.1f}")
    return table


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
    config = settings()
    own = consumer_groups(config)
    groups: dict[str, tuple[str, ...] | None] = {g: own.get(g) for g in group} if group else dict(own)

    async def once() -> list[GroupReport]:
        return await measure(config, groups, window, samples)

    def report(reports: list[GroupReport]) -> int:
        if as_json:
            print_json([r.as_dict() for r in reports])
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


def register(app: typer.Typer) -> None:
    app.command("lag")(lag)
