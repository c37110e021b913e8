"""Operations: consumer lag with a Burrow-style status, and the doctor's checks of a deployment."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.live import Live
from rich.table import Table

from suspensions.cli.common import JsonFlag, console, print_json, run_async, settings
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
        reports = run_async(once())
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
        run_async(loop())
    except KeyboardInterrupt:
        raise typer.Exit(0) from None


def doctor(as_json: JsonFlag = False) -> None:
    """Check, with the configured settings, that the broker answers (protocol, TLS, authentication), every
    topic exists as catalogued, the consumer groups are known, PostgreSQL answers and every migration is applied.

    Exit code 1 when a check fails.
    """
    from suspensions.doctor import run_checks

    checks = run_async(run_checks(settings()))
    if as_json:
        print_json({"ok": all(check.ok for check in checks), "checks": [check.as_dict() for check in checks]})
    else:
        table = Table(title="suspensions doctor")
        for column in ("check", "status", "found", "how to fix"):
            table.add_column(column)
        for check in checks:
            table.add_row(check.name, "[green]OK[/]" if check.ok else "[red]FAIL[/]", check.detail, check.fix)
        console.print(table)
    raise typer.Exit(0 if all(check.ok for check in checks) else 1)


def register(app: typer.Typer) -> None:
    app.command("lag")(lag)
    app.command("doctor")(doctor)
