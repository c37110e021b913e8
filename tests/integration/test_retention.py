"""Issue 28: storage that does not grow forever. Windows of seconds, each test on a broker and a database of
its own (`isolated`): what falls out of a window is removed by the worker that owns it, what a reader needs
stays, and the contract's word on a command re-sent after its id was forgotten holds."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from suspensions import access
from suspensions.access import Role
from suspensions.local.processes import metric_total
from tests.integration import builders
from tests.reliability.harness import produce
from tests.support import WorkerProcess, run_cli, uid, wait_until
from topics import SUSPENSION_COMMANDS
from workers.runtime.config import Settings
from workers.runtime.retention import ensure_partition, history_partitions, month_start, next_month, partition_name

pytestmark = pytest.mark.integration

FAST = {"SUSPENSIONS_RETENTION_INTERVAL_S": "0.3"}


async def fetch(settings: Settings, sql: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(settings.database_url)
    try:
        rows: list[asyncpg.Record] = await conn.fetch(sql, *args)
        return rows
    finally:
        await conn.close()


async def value(settings: Settings, sql: str, *args: Any) -> Any:
    rows = await fetch(settings, sql, *args)
    return rows[0][0] if rows else None


async def test_a_command_resent_inside_the_window_is_a_no_op_and_after_it_is_applied_again(
        isolated: Settings, tmp_path: Path) -> None:
    space, customer = uid("space"), uid("cust")
    worker = WorkerProcess(isolated, ("state",), {**FAST, "SUSPENSIONS_DEDUP_RETENTION": "2"},
                           tmp_path / "state.log").start()
    try:
        await worker.wait_ready()
        suspend = builders.command(customer, space)
        lift = builders.command(customer, space, action="lift")
        await produce(isolated, SUSPENSION_COMMANDS.name, [suspend, suspend, lift])  # a copy at once: nothing

        async def versions() -> list[tuple[str, str]] | None:
            rows = await fetch(isolated, "SELECT command_id, outcome FROM command_history WHERE customer_id = $1 "
                                         "ORDER BY id", customer)
            return [(row["command_id"], row["outcome"]) for row in rows] if len(rows) >= 2 else None

        assert await wait_until(versions, 30, "the suspend and the lift") == [
            (suspend["command_id"], "changed"), (lift["command_id"], "changed")]

        async def forgotten() -> bool:
            return not await value(isolated, "SELECT count(*) FROM processed_commands WHERE command_id = $1",
                                   suspend["command_id"])

        await wait_until(forgotten, 30, "the suspend's id to fall out of the 2 s window")
        # Re-sent after the window: applied as a new command (the contract says so): suspended again.
        await produce(isolated, SUSPENSION_COMMANDS.name, [suspend])

        async def suspended_again() -> bool:
            return bool(await value(isolated, "SELECT suspended AND version = 3 FROM customer_state "
                                              "WHERE customer_id = $1", customer))

        await wait_until(suspended_again, 30, "the re-sent suspend applied again")
        # Forgotten a partition at a time, never row by row.
        assert await asyncio.to_thread(metric_total, worker.http_port,
                                       "suspensions_retention_partitions_dropped_total") >= 1
        assert await asyncio.to_thread(metric_total, worker.http_port, "suspensions_retention_rows_removed_total") == 0
        # The topic keeps commands 7 days, longer than this window: the worker said so at start.
        assert "SUSPENSIONS_DEDUP_RETENTION (2 s) is shorter than suspension.commands' retention.ms (7 d)" in \
            (tmp_path / "state.log").read_text()
    finally:
        worker.stop()


async def test_history_partitions_are_made_ahead_read_across_and_dropped_past_the_window(
        isolated: Settings, tmp_path: Path) -> None:
    space, customer = uid("space"), uid("cust")
    now = datetime.now(UTC)
    this_month = month_start(now)
    old_month = month_start(now - timedelta(days=200))
    conn = await asyncpg.connect(isolated.database_url)
    try:  # an old month's partition with one row of the customer, and a row older than every partition
        await ensure_partition(conn, old_month)
        await conn.execute(
            "INSERT INTO command_history (command_id, customer_id, space_id, action, reason, actor, issued_at, "
            "applied_at, outcome, version_after, source_partition, source_offset) "
            "VALUES ($1, $2, $3, 'suspend', 'manual', 'admin:ops', $4, $4, 'changed', 1, 0, 0), "
            "($5, $2, $3, 'lift', 'manual', 'admin:ops', $6, $6, 'changed', 2, 0, 1)",
            uid("old"), customer, space, datetime(old_month.year, old_month.month, 15, tzinfo=UTC), uid("older"),
            datetime(2001, 1, 1, tzinfo=UTC))
    finally:
        await conn.close()
    await produce(isolated, SUSPENSION_COMMANDS.name, [builders.command(customer, space)])
    forever = WorkerProcess(isolated, ("state",), FAST, tmp_path / "state-1.log").start()
    try:
        await forever.wait_ready()

        async def applied() -> bool:
            return bool(await value(isolated, "SELECT count(*) = 3 FROM command_history WHERE customer_id = $1",
                                    customer))

        await wait_until(applied, 30, "the new command applied")
        months = await _partitions(isolated)
        ahead = [this_month, next_month(this_month), next_month(next_month(this_month))]
        assert set(ahead) <= set(months) and old_month in months
        # Read across partitions, in order, by the operators' history.
        result = await asyncio.to_thread(run_cli, isolated, "history", customer, "--json")
        assert result.returncode == 0, result.stderr
        assert [entry["applied_at"][:4] for entry in json.loads(result.stdout)] == [
            str(old_month.year), "2001", str(now.year)]
    finally:
        forever.stop()

    kept = WorkerProcess(isolated, ("state",), {**FAST, "SUSPENSIONS_HISTORY_RETENTION": "P60D"},
                         tmp_path / "state-2.log").start()
    try:
        await kept.wait_ready()

        async def dropped() -> bool:
            return old_month not in await _partitions(isolated)

        await wait_until(dropped, 30, f"the partition {partition_name(old_month)} dropped")
        rows = await fetch(isolated, "SELECT applied_at FROM command_history WHERE customer_id = $1", customer)
        assert [row["applied_at"].year for row in rows] == [now.year]  # the old month and the default's old row
        assert this_month in await _partitions(isolated)
        assert await asyncio.to_thread(metric_total, kept.http_port,
                                       "suspensions_retention_partitions_dropped_total") == 1
    finally:
        kept.stop()


async def _partitions(settings: Settings) -> list[date]:
    conn = await asyncpg.connect(settings.database_url)
    try:
        return await history_partitions(conn)
    finally:
        await conn.close()


async def test_everything_else_ends_and_nothing_a_reader_needs_goes_early(isolated: Settings, tmp_path: Path) -> None:
    old, now = datetime.now(UTC) - timedelta(days=400), datetime.now(UTC)
    space = uid("space")
    conn = await asyncpg.connect(isolated.database_url)
    try:
        for status in ("pending", "fired", "cancelled"):
            await conn.execute(
                "INSERT INTO schedules (schedule_id, customer_id, space_id, action, at, actor, source_partition, "
                "status, updated_by_command, updated_at) VALUES ($1, 'c', $2, 'lift', $3, 'admin:ops', 0, $1, 'k', $3)",
                status, space, old)
        for status in ("dropped", "accepted", "waived"):
            await conn.execute(
                "INSERT INTO invoice_decisions (job_id, customer_id, space_id, contract_id, amount, currency, status, "
                "job, decided_at) VALUES ($1, 'c', $2, 'k', 1, 'EUR', $1, '{}', $3)", status, space, old)
        for status in ("running", "done", "failed"):
            await conn.execute("INSERT INTO bulk_jobs (bulk_id, space_id, action, actor, status, created_at, updated_at) "
                               "VALUES ($1, $2, 'lift', 'admin:ops', $1, $3, $3)", status, space, old)
        name = uid("token")
        await access.create_token(conn, name, Role.VIEWER, [space])
        for label, expires in (("expired", old), ("live", now + timedelta(hours=1))):
            await conn.execute("INSERT INTO console_sessions (session_hash, token_name, csrf, created_at, expires_at) "
                               "VALUES ($1, $2, 'x', $3, $4)", label.encode(), name, old, expires)
    finally:
        await conn.close()
    windows = {"SUSPENSIONS_SCHEDULES_RETENTION": "60", "SUSPENSIONS_INVOICE_DEDUP_RETENTION": "60",
               "SUSPENSIONS_BULK_JOBS_RETENTION": "60", "SUSPENSIONS_SESSIONS_RETENTION": "60"}
    worker = WorkerProcess(isolated, ("state", "billing", "api"), {**FAST, **windows}, tmp_path / "all.log").start()
    try:
        await worker.wait_ready()

        async def kept() -> dict[str, list[str]] | None:
            found = {
                "schedules": [r[0] for r in await fetch(isolated, "SELECT status FROM schedules")],
                "invoice_decisions": [r[0] for r in await fetch(isolated, "SELECT status FROM invoice_decisions")],
                "bulk_jobs": [r[0] for r in await fetch(isolated, "SELECT status FROM bulk_jobs")],
                "console_sessions": [r[0].decode() for r in await fetch(isolated,
                                                                          "SELECT session_hash FROM console_sessions")],
            }
            return found if all(len(statuses) == 1 for statuses in found.values()) else None

        assert await wait_until(kept, 30, "every rule's pass") == {
            "schedules": ["pending"], "invoice_decisions": ["dropped"], "bulk_jobs": ["running"],
            "console_sessions": ["live"]}
        result = await asyncio.to_thread(run_cli, isolated, "db", "retention", "--json")
        assert result.returncode == 0, result.stderr
        reports = {entry["table"]: entry for entry in json.loads(result.stdout)}
        assert set(reports) >= {"processed_commands", "command_history", "schedules", "invoice_decisions",
                                "bulk_jobs", "console_sessions"}
        assert reports["command_history"]["partitions"] >= 3 and "forever" in reports["command_history"]["rule"]
        assert reports["schedules"]["owner"] == "state" and reports["bulk_jobs"]["owner"] == "api"
        assert reports["invoice_decisions"]["oldest"] is None  # the dropped job is not removable: no oldest
        assert reports["processed_commands"]["rule"].startswith("SUSPENSIONS_DEDUP_RETENTION=8 d")
        assert reports["processed_commands"]["partitions"] >= 1 + 3  # the migration's, and spans made ahead
    finally:
        worker.stop()
