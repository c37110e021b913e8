"""`suspensions db check` and `suspensions db rebuild --from-topics` (docs/operations.md, "Disaster recovery").

Exit codes: 0 when the database agrees with the topics (check) or was rebuilt (rebuild); 1 when they differ
(check) or the rebuild refused to run (the state workers are running); 2 when the broker or PostgreSQL
cannot be used (one line naming it, never a password).
"""

from __future__ import annotations

import dataclasses
from typing import Annotated

import typer
from rich.table import Table

from suspensions.cli.common import JsonFlag, console, errors, fail, print_json, run_async, settings
from suspensions.recovery.run import Refused, Unreachable, check, rebuild


def db_check(
    as_json: JsonFlag = False,
    limit: Annotated[int, typer.Option(help="Differences listed in the table (--json lists every one).")] = 50,
) -> None:
    """Compare each customer's state in PostgreSQL with its latest record on `suspension.state`; exit 1 when
    any differs (missing on either side, older or newer in the database)."""
    try:
        report = run_async(check(settings()))
    except Unreachable as error:
        fail(str(error), 2)
    if as_json:
        print_json({"differs": report.differs, "counts": report.counts,
                    "customers_on_topic": report.customers_on_topic,
                    "customers_in_database": report.customers_in_database,
                    "topic_records": report.topic_records, "skipped_records": report.skipped,
                    "differences": [dataclasses.asdict(difference) for difference in report.differences]})
    else:
        counts = ", ".join(f"{count:,} {kind.replace('_', ' ')}" for kind, count in report.counts.items() if count)
        console.print(f"{report.customers_in_database:,} customers in PostgreSQL, {report.customers_on_topic:,} on "
                      f"suspension.state ({report.topic_records:,} records read"
                      f"{f', {report.skipped:,} not states, skipped' if report.skipped else ''}): "
                      f"{counts or 'no difference'}")
        if report.differences:
            table = Table(title="differences (database against suspension.state)")
            for column in ("customer", "difference", "database version", "topic version"):
                table.add_column(column, justify="right" if "version" in column else "left")
            for difference in report.differences[:limit]:
                table.add_row(difference.customer_id, difference.kind.value.replace("_", " "),
                              _version(difference.database_version), _version(difference.topic_version))
            console.print(table)
            if len(report.differences) > limit:
                console.print(f"... and {len(report.differences) - limit:,} more (--json lists every one)")
    if report.differs:
        raise typer.Exit(1)


def _version(version: int | None) -> str:
    return "-" if version is None else str(version)


def db_rebuild(
    from_topics: Annotated[bool, typer.Option("--from-topics", help="Rebuild from suspension.state and "
                                              "suspension.events (the one source there is).")] = False,
    force: Annotated[bool, typer.Option("--force", help="Rebuild even while the state worker's group has "
                                        "members (its offsets are then left as they are).")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Bring customer states, history, processed ids and pending schedules forward from the topics (into an
    empty database, or one restored from an old backup), drop the outbox rows already published, and
    commit the state worker's group where the rebuilt state says. Stop every worker first; safe to run twice."""
    if not from_topics:
        fail("say where from: `suspensions db rebuild --from-topics`", 2)
    try:
        report = run_async(rebuild(settings(), force=force, progress=lambda step: errors.print(step)))
    except Unreachable as error:
        fail(str(error), 2)
    except Refused as error:
        fail(str(error), 1)
    if as_json:
        print_json(dataclasses.asdict(report) | {
            "offsets": {str(partition): {"committed_before": before, "resumes_at": after}
                        for partition, (before, after) in report.offsets.items()}})
        return
    console.print(
        f"states: {report.states_read:,} records read, {report.states_inserted:,} customers added, "
        f"{report.states_updated:,} moved forward"
        f"{f', {report.states_skipped:,} records not states or refused, skipped' if report.states_skipped else ''}")
    console.print(
        f"history: {report.events_read:,} events read, {report.history_added:,} rows and "
        f"{report.processed_added:,} processed ids added"
        f"{f', {report.events_skipped:,} records not events, skipped' if report.events_skipped else ''}")
    console.print("outbox rows of the state worker: " + ", ".join(f"{count} {fate}" for fate, count
                                                                    in report.outbox.items()))
    moves = ", ".join(f"{partition}: {'-' if before is None else before} -> {after}"
                      for partition, (before, after) in sorted(report.offsets.items()))
    console.print(f"suspension.commands ({report.commands_read:,} records read), where the state worker resumes: "
                  f"{moves}" + ("" if report.offsets_committed else
                                " [yellow](not committed: the group has members)[/yellow]"))
    console.print(f"done in {report.seconds:.1f} s; `suspensions db check` compares the result with the topic")
