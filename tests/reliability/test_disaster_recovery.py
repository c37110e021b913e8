"""Issue 27, part 3: a database restored from an old backup, brought forward from the topics.

Load runs; a copy of the database is taken mid-run (`pg_dump`); the load goes on to its end; the database is
destroyed and the old copy restored; the state worker's group has lost its offsets too. `suspensions db
rebuild --from-topics` (twice) must leave `suspensions db check` with no difference, the rows as they were
before the loss, and the commands that come after applied exactly once (the oracle: the pure rules folded
over every command, re-sent copies included).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from suspensions.local.postgres import DATABASE, LocalPostgres, postgres_bindir
from suspensions.local.processes import WorkerProcess as LocalWorkerProcess
from tests.integration import builders
from tests.reliability.harness import (
    assert_state_matches_oracle,
    command_stream,
    count,
    customers,
    produce,
    wait_for_count,
    wait_until_decided,
)
from tests.support import WorkerProcess, create_database, run_cli, run_cli_env, uid, wait_until
from topics import SUSPENSION_COMMANDS
from workers.runtime.config import Settings
from workers.runtime.db.migrate import migrate
from workers.runtime.db.repository import STATE_COLUMNS, state_from_row

pytestmark = [pytest.mark.integration, pytest.mark.slow]

STATE_ROWS = "SELECT customer_id, version, suspended, reasons, last_command_id FROM customer_state ORDER BY 1"


def _pg(tool: str, *args: str, check: bool = True) -> bool:
    """A PostgreSQL client program of the same build as the server (next to its ``postgres`` binary)."""
    result = subprocess.run([str(postgres_bindir() / tool), *args], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 or not check, f"{tool}: {result.stderr[-2000:]}"
    return result.returncode == 0


async def _rows(url: str, sql: str) -> list[tuple[Any, ...]]:
    conn = await asyncpg.connect(url)
    try:
        return [tuple(row) for row in await conn.fetch(sql)]
    finally:
        await conn.close()


async def _destroy_and_restore(postgres: LocalPostgres, dump: Path) -> None:
    """The database is lost: dropped (every connection closed), created empty, and the old copy restored."""
    admin = await asyncpg.connect(postgres.url.rsplit("/", 1)[0] + "/postgres")
    try:
        await admin.execute(f'DROP DATABASE "{DATABASE}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{DATABASE}"')
    finally:
        await admin.close()
    await asyncio.to_thread(_pg, "pg_restore", "--no-owner", f"--dbname={postgres.url}", str(dump))


async def _empty_group(settings: Settings, group: str) -> None:
    """Until the group has no member. The local broker keeps a stopped first member listed until another joins
    (LOCAL_BROKER.md), which Apache Kafka expires after its session timeout: a member joins and leaves."""
    consumer = AIOKafkaConsumer(SUSPENSION_COMMANDS.name, bootstrap_servers=settings.kafka_bootstrap_servers,
                                group_id=group, enable_auto_commit=False, session_timeout_ms=6000,
                                heartbeat_interval_ms=1000)
    await consumer.start()
    try:
        async def joined() -> bool:
            await consumer.getmany(timeout_ms=200, max_records=1)
            return bool(consumer.assignment())

        await wait_until(joined, 60, "a member to join the state group")
    finally:
        await consumer.stop()  # leaves the group (it never commits)


async def _lose_offsets(settings: Settings, group: str) -> None:
    """The group's committed offsets go back to the start of the topic, as if they had expired with it."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers, group_id=group,
                                enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = [TopicPartition(SUSPENSION_COMMANDS.name, p)
                      for p in sorted(consumer.partitions_for_topic(SUSPENSION_COMMANDS.name) or ())]
        consumer.assign(partitions)
        await consumer.commit(dict.fromkeys(partitions, 0))
    finally:
        await consumer.stop()


async def _dump_holding_outbox_rows(worker: LocalWorkerProcess, local: Settings, postgres: LocalPostgres,
                                    dump: Path, commands: int) -> bool:
    """Take the copy while the state worker is stopped (SIGSTOP) mid-run (fewer than ``commands`` applied) with
    outbox rows committed: published or about to be, and deleted only later, they are what an old backup
    holds. False (and the worker runs on) when it stopped with none."""
    os.kill(worker.running.pid, signal.SIGSTOP)
    try:
        if not await count(local.database_url, "SELECT count(*) FROM outbox"):
            return False
        if await count(local.database_url, "SELECT count(*) FROM processed_commands") >= commands:
            raise AssertionError("the load ended before a copy could be taken mid-run")
        # A worker stopped inside a retention pass's partition DDL holds a lock pg_dump waits for: try again.
        return await asyncio.to_thread(_pg, "pg_dump", "--format=custom", "--lock-wait-timeout=2000",
                                       f"--file={dump}", postgres.url, check=False)
    finally:
        os.kill(worker.running.pid, signal.SIGCONT)


def _cli_json(local: Settings, *args: str, code: int) -> dict[str, Any]:
    result = run_cli(local, *args, "--json", timeout_s=300)
    assert result.returncode == code, (result.returncode, result.stdout[-2000:], result.stderr[-2000:])
    loaded: dict[str, Any] = orjson.loads(result.stdout)
    return loaded


async def test_an_old_backup_restored_is_brought_forward_from_the_topics(
        own_postgres: tuple[Settings, LocalPostgres], tmp_path: Path) -> None:
    local, postgres = own_postgres
    space = uid("space")
    stream = command_stream(customers(400), space, 8_000)
    first, later = stream[:6_000], stream[6_000:]
    distinct_first = len({c["command_id"] for c in first})
    dump = tmp_path / "suspensions.dump"

    worker = WorkerProcess(local, ("state",), log_path=tmp_path / "workers.log").start()
    try:
        await worker.wait_ready()
        await produce(local, SUSPENSION_COMMANDS.name, first[:2_000])
        await wait_for_count(local.database_url, "SELECT count(*) FROM processed_commands", 1_500, 60,
                             "load under way")
        # The rest as a backlog: while the worker drains it, its outbox holds the last batch's row.
        producing = asyncio.create_task(produce(local, SUSPENSION_COMMANDS.name, first[2_000:]))
        await wait_until(lambda: _dump_holding_outbox_rows(worker, local, postgres, dump, distinct_first), 60,
                         "a copy taken mid-run while the outbox holds rows")
        await producing
        await wait_until_decided(local.database_url, distinct_first, timeout_s=180)
    finally:
        assert worker.stop() == 0
    before_loss = await _rows(local.database_url, STATE_ROWS)
    changes_before_loss = await count(local.database_url,
                                      "SELECT count(*) FROM command_history WHERE outcome = 'changed'")

    await _destroy_and_restore(postgres, dump)
    restored_processed = await count(local.database_url, "SELECT count(*) FROM processed_commands")
    restored_outbox = await count(local.database_url, "SELECT count(*) FROM outbox")
    assert 1_500 <= restored_processed < distinct_first, "the copy was taken mid-run"
    stale = _cli_json(local, "db", "check", code=1)
    assert stale["differs"] and stale["counts"]["older"] + stale["counts"]["missing_in_database"] > 0
    assert stale["counts"]["newer"] == stale["counts"]["missing_on_topic"] == 0

    await _empty_group(local, local.state_group)
    await _lose_offsets(local, local.state_group)
    rebuilt = _cli_json(local, "db", "rebuild", "--from-topics", code=0)
    assert rebuilt["states_inserted"] + rebuilt["states_updated"] == len(stale["differences"])
    assert rebuilt["offsets_committed"]
    # The restored outbox held only rows published since: none of them may be published again (an older
    # state after a newer one on the compacted topic); the oracle's check of the topic below sees any.
    assert rebuilt["outbox"]["keep"] == rebuilt["outbox"]["trim"] == 0
    assert rebuilt["outbox"]["delete"] == restored_outbox > 0
    again = _cli_json(local, "db", "rebuild", "--from-topics", code=0)
    assert (again["states_inserted"], again["states_updated"], again["history_added"], again["processed_added"]) == (
        0, 0, 0, 0)
    assert again["offsets"] == {p: {**entry, "committed_before": entry["resumes_at"]}
                                for p, entry in rebuilt["offsets"].items()}
    checked = _cli_json(local, "db", "check", code=0)
    assert not checked["differs"] and checked["customers_in_database"] == len(before_loss)

    # The rows are what they were before the loss; every change is in history once.
    assert await _rows(local.database_url, STATE_ROWS) == before_loss
    assert await count(local.database_url,
                       "SELECT count(*) FROM command_history WHERE outcome = 'changed'") == changes_before_loss
    # Processed ids: every change's (from its event) and every command's read before where the group resumes.
    assert await count(local.database_url, "SELECT count(*) FROM processed_commands") > restored_processed

    # The commands after the rebuild (re-sent copies of earlier ones among them) are applied exactly once.
    worker = WorkerProcess(local, ("state",), log_path=tmp_path / "workers-after.log").start()
    try:
        await worker.wait_ready()
        await produce(local, SUSPENSION_COMMANDS.name, later)
        later_ids = list({c["command_id"] for c in later})
        await wait_for_count(
            local.database_url,
            f"SELECT count(DISTINCT command_id) FROM processed_commands WHERE command_id IN "
            f"({', '.join(repr(command_id) for command_id in later_ids)})",
            len(later_ids), 180, "every later command applied")
        await wait_for_count(local.database_url, "SELECT CASE WHEN count(*) = 0 THEN 1 ELSE 0 END FROM outbox", 1,
                             60, "outbox drained")
    finally:
        assert worker.stop() == 0
    await assert_state_matches_oracle(local, stream)
    _cli_json(local, "db", "check", code=0)


SCHEDULE_ROWS = ("SELECT schedule_id, customer_id, space_id, action, at, missed_invoices, actor, note, source_partition, "
                 "status FROM schedules WHERE status = 'pending' ORDER BY 1")
HISTORY_ROWS = ("SELECT command_id, customer_id, space_id, action, reason, actor, note, missed_invoices, version_after, "
                "suspended_after, schedule_id, fired_delay_ms FROM command_history WHERE outcome = 'changed' "
                "ORDER BY customer_id, version_after")


async def _states(url: str) -> dict[str, Any]:
    conn = await asyncpg.connect(url)
    try:
        return {row["customer_id"]: state_from_row(row)
                for row in await conn.fetch(f"SELECT {STATE_COLUMNS} FROM customer_state")}
    finally:
        await conn.close()


def _moment(delta: timedelta) -> str:
    return (datetime.now(UTC) + delta).isoformat().replace("+00:00", "Z")


async def test_an_empty_database_is_rebuilt_with_its_schedules(isolated: Settings, tmp_path: Path) -> None:
    """Everything lost: a new, empty database (migrated) is rebuilt from the topics alone. States equal the
    lost ones field by field; pending schedules are back where the state worker fires them (one fires after
    the rebuild); every change's history row holds what its event says; the rebuild refuses to run while a
    state worker is in the group."""
    local, space = isolated, uid("space")
    people = customers(30)
    worker = WorkerProcess(local, ("state",), log_path=tmp_path / "workers.log").start()
    try:
        await worker.wait_ready()
        # Due a minute after the worker is ready: not fired before this worker stops, fired after the rebuild.
        soon = _moment(timedelta(seconds=60))
        commands = [builders.command(c, space, reason="plan") for c in people]
        commands += [builders.command(c, space, action="lift") for c in people[:10]]
        commands += [builders.command(c, space, reason="manual", until=_moment(timedelta(days=2))) for c in people[10:15]]
        later = [builders.command(c, space, action="suspend", reason="manual", at=_moment(timedelta(days=3)),
                                  command_id=uid("sched")) for c in people[15:20]]
        commands += later
        commands += [builders.command(people[15], space, action="cancel_schedule", schedule_id=later[0]["command_id"])]
        commands += [builders.command(people[0], space, action="lift", at=soon, missed_invoices="waive")]  # lifted
        firing = builders.command(people[1], space, action="suspend", reason="manual", at=soon)  # fires after
        commands += [firing]
        await produce(local, SUSPENSION_COMMANDS.name, commands)
        await wait_until_decided(local.database_url, len(commands), timeout_s=60)
    finally:
        assert worker.stop() == 0
    lost_states = await _states(local.database_url)
    lost_schedules = await _rows(local.database_url, SCHEDULE_ROWS)
    lost_history = await _rows(local.database_url, HISTORY_ROWS)
    assert firing["command_id"] in {row[0] for row in lost_schedules}, "the schedule fired before the rebuild"
    assert len(lost_schedules) == 5 + 4 + 2  # the untils, the later suspensions but one, the two soon

    empty = local.model_copy(update={"database_url": await create_database(local, "empty")})
    await migrate(empty.database_url)
    missing = _cli_json(empty, "db", "check", code=1)
    assert missing["counts"]["missing_in_database"] == len(people) == len(missing["differences"])
    shown = run_cli(empty, "db", "check", "--limit", "3", timeout_s=120)
    assert shown.returncode == 1 and f"{len(people)} missing in database" in shown.stdout, shown.stdout
    assert shown.stdout.count("missing in database") == 4 and f"and {len(people) - 3} more" in shown.stdout

    running = WorkerProcess(empty, ("state",), log_path=tmp_path / "refused.log").start()
    try:
        await running.wait_ready()
        refused = run_cli(empty, "db", "rebuild", "--from-topics", timeout_s=120)
        assert refused.returncode == 1 and "stop every state worker" in refused.stderr, refused.stderr
        assert await count(empty.database_url, "SELECT count(*) FROM customer_state") == 0
    finally:
        assert running.stop() == 0
    await _empty_group(empty, empty.state_group)
    # As an old backup would hold it: the schedule cancelled since, still pending. It must never fire.
    conn = await asyncpg.connect(empty.database_url)
    try:
        await conn.execute("INSERT INTO schedules (schedule_id, customer_id, space_id, action, at, actor, "
                           "source_partition, status, updated_by_command, updated_at) VALUES ($1, $2, $3, 'suspend', "
                           "now() + interval '3 days', 'admin:tests', 0, 'pending', $1, now())",
                           later[0]["command_id"], people[15], space)
    finally:
        await conn.close()

    rebuilt = _cli_json(empty, "db", "rebuild", "--from-topics", code=0)
    assert rebuilt["states_inserted"] == len(people)
    assert await _states(empty.database_url) == lost_states
    assert await _rows(empty.database_url, SCHEDULE_ROWS) == lost_schedules
    assert await _rows(empty.database_url, f"SELECT status, updated_by_command FROM schedules WHERE schedule_id = "
                                           f"'{later[0]['command_id']}'") == [("cancelled", "rebuild")]
    assert await _rows(empty.database_url, HISTORY_ROWS) == lost_history
    _cli_json(empty, "db", "check", code=0)
    again = run_cli(empty, "db", "rebuild", "--from-topics", timeout_s=120)
    assert again.returncode == 0 and "0 customers added, 0 moved forward" in again.stdout, again.stdout
    assert "no difference" in run_cli(empty, "db", "check", timeout_s=120).stdout

    # The schedule that falls due after the rebuild is fired by the state worker from the rebuilt rows.
    worker = WorkerProcess(empty, ("state",), log_path=tmp_path / "workers-after.log").start()
    try:
        await worker.wait_ready()

        async def fired() -> bool:
            return await count(empty.database_url, "SELECT count(*) FROM schedules WHERE status = 'fired' "
                                                   "AND schedule_id = $1", firing["command_id"]) == 1

        await wait_until(fired, 90, "the rebuilt schedule to fire")
        await wait_until(lambda: count(empty.database_url, "SELECT count(*) FROM customer_state WHERE customer_id = "
                                                           "$1 AND NOT suspended", people[0]), 30, "the lift to fire")
    finally:
        assert worker.stop() == 0
    _cli_json(empty, "db", "check", code=0)


async def test_an_unreachable_dependency_is_one_line_and_exit_2(isolated: Settings) -> None:
    url = "postgresql://svc:hunter2secret@127.0.0.1:1/suspensions"
    for command in (("db", "check"), ("db", "rebuild", "--from-topics")):
        result = run_cli_env(isolated, {"SUSPENSIONS_DATABASE_URL": url}, *command, timeout_s=60)
        assert result.returncode == 2, (command, result.stdout, result.stderr)
        assert "cannot reach PostgreSQL at postgresql://svc:***@127.0.0.1:1/suspensions" in result.stderr
        assert "hunter2secret" not in result.stderr + result.stdout
    result = run_cli_env(isolated, {"SUSPENSIONS_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"}, "db", "check",
                         timeout_s=60)
    assert result.returncode == 2 and "127.0.0.1:1" in result.stderr, (result.stdout, result.stderr)


async def test_a_state_record_postgresql_refuses_is_skipped_and_the_rest_rebuilt(
        isolated: Settings, tmp_path: Path) -> None:
    """One record on `suspension.state` with a field of the wrong type (not from the service: the topic is
    anyone's to write) is skipped and counted; every other customer is rebuilt, and a second run does the
    same rather than stopping at it."""
    space = uid("space")
    people = customers(40)
    commands = [builders.command(c, space, reason="plan") for c in people]
    worker = WorkerProcess(isolated, ("state",), log_path=tmp_path / "workers.log").start()
    try:
        await worker.wait_ready()
        await produce(isolated, SUSPENSION_COMMANDS.name, commands)
        await wait_until_decided(isolated.database_url, len(commands), timeout_s=60)
    finally:
        assert worker.stop() == 0
    lost = await _states(isolated.database_url)
    # A later version of one customer whose `suspended` PostgreSQL cannot take as a boolean.
    bad = {**orjson.loads(orjson.dumps(lost[people[7]].to_record().model_dump(mode="json"))),
           "version": 9, "suspended": "perhaps"}
    await produce(isolated, "suspension.state", [bad])
    await _empty_group(isolated, isolated.state_group)

    empty = isolated.model_copy(update={"database_url": await create_database(isolated, "empty")})
    await migrate(empty.database_url)
    for _ in range(2):
        rebuilt = _cli_json(empty, "db", "rebuild", "--from-topics", code=0)
        assert rebuilt["states_skipped"] == 1
    rows = await _states(empty.database_url)
    assert set(rows) == set(people) - {people[7]}
    assert all(rows[c] == lost[c] for c in rows)
    assert _cli_json(empty, "db", "check", code=1)["counts"]["missing_in_database"] == 1
