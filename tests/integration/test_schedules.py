"""Issue 14: scheduled suspensions and lifts, in the space's own time zone, fired once whatever happens."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer

from tests.integration import builders
from tests.reliability.harness import produce, read_topic
from tests.support import TopicTail, WorkerProcess, now_iso, run_cli, send, uid, wait_until
from topics import DEADLETTER, SETTINGS_SPACES, SUSPENSION_COMMANDS, SUSPENSION_EVENTS, SUSPENSION_STATE
from workers.runtime.config import Settings

pytestmark = pytest.mark.integration


def soon(seconds: float) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")


def cli_json(settings: Settings, *args: str) -> Any:
    result = run_cli(settings, *args, "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout)


async def _history(db: asyncpg.Pool | str, customer: str) -> list[asyncpg.Record]:
    sql = "SELECT * FROM command_history WHERE customer_id = $1 ORDER BY id"
    if isinstance(db, str):
        conn = await asyncpg.connect(db)
        try:
            return await conn.fetch(sql, customer)
        finally:
            await conn.close()
    return await db.fetch(sql, customer)


async def test_a_scheduled_suspension_fires_on_time_as_a_manual_one(settings: Settings, workers: WorkerProcess,
                                                                     tail: TopicTail, db: asyncpg.Pool) -> None:
    space, customer = uid("space"), uid("cust")
    scheduled = cli_json(settings, "suspend", customer, "--space", space, "--actor", "admin:ops", "--note", "unpaid",
                         "--at", soon(3), "--wait")
    assert scheduled["outcome"] == "changed"
    [pending] = scheduled["state"]["scheduled"]
    assert (pending["action"], pending["actor"], pending["note"]) == ("suspend", "admin:ops", "unpaid")
    assert scheduled["state"]["suspended"] is False

    [fired] = await tail.wait_for(SUSPENSION_STATE.name, customer_id=customer, suspended=True, timeout_s=30)
    assert (fired["reasons"], fired["scheduled"], fired["version"]) == (["manual"], [], 2)
    events = await tail.wait_for(SUSPENSION_EVENTS.name, count=2, customer_id=customer)
    assert [(e["type"], e["source"]) for e in events] == [("suspension_scheduled", "operator_cli"),
                                                          ("suspended", "schedule")]
    history = await _history(db, customer)
    assert [(h["action"], h["outcome"]) for h in history] == [("suspend", "changed"), ("suspend", "changed")]
    assert history[1]["schedule_id"] == pending["schedule_id"]
    assert 0 <= history[1]["fired_delay_ms"] < 1_000  # within a second of its moment in normal operation
    assert events[1]["fired_delay_ms"] == history[1]["fired_delay_ms"]
    row = await db.fetchrow("SELECT status, fired_delay_ms FROM schedules WHERE schedule_id = $1",
                            pending["schedule_id"])
    assert row["status"] == "fired"


async def test_move_cancel_and_local_dates(settings: Settings, workers: WorkerProcess, producer: AIOKafkaProducer,
                                           tail: TopicTail, db: asyncpg.Pool) -> None:
    space, customer = uid("space"), uid("cust")
    await send(producer, SETTINGS_SPACES.name, space,
               {"space_id": space, "time_zone": "America/Los_Angeles", "updated_at": now_iso()})
    run_cli(settings, "suspend", customer, "--space", space, "--actor", "admin:ops", "--wait")
    # A date alone is 00:00 in the space's zone, not UTC midnight.
    first = cli_json(settings, "lift", customer, "--space", space, "--actor", "admin:ops", "--at", "2099-12-01",
                     "--missed-invoices", "waive", "--wait")
    [entry] = first["state"]["scheduled"]
    assert (entry["at"], entry["missed_invoices"]) == ("2099-12-01T08:00:00Z", "waive")
    listed = cli_json(settings, "schedule", "list", "--space", space)
    assert [(e["schedule_id"], e["at_local"]) for e in listed] == [
        (entry["schedule_id"], "2099-12-01T00:00:00-08:00")]
    assert "America/Los_Angeles" in listed[0]["when"]

    # Scheduling the same action again moves it: one schedule, same id, the new moment.
    moved = cli_json(settings, "lift", customer, "--space", space, "--actor", "admin:ops",
                     "--at", "2099-12-05T09:00", "--wait")
    assert [(e["schedule_id"], e["at"]) for e in moved["state"]["scheduled"]] == [
        (entry["schedule_id"], "2099-12-05T17:00:00Z")]
    cancelled = cli_json(settings, "schedule", "cancel", entry["schedule_id"], "--actor", "admin:ops", "--wait")
    assert cancelled["outcome"] == "changed" and cancelled["state"]["scheduled"] == []
    assert cancelled["state"]["suspended"] is True
    again = run_cli(settings, "schedule", "cancel", entry["schedule_id"], "--actor", "admin:ops")
    assert again.returncode == 1 and "cancelled already" in again.stderr
    assert cli_json(settings, "schedule", "list", "--space", space) == []
    actions = [h["action"] for h in await _history(db, customer)]
    assert actions == ["suspend", "lift", "lift", "cancel_schedule"]  # the move and the cancel are in history
    kinds = [e["type"] for e in await tail.wait_for(SUSPENSION_EVENTS.name, count=4, customer_id=customer)]
    assert kinds == ["suspended", "lift_scheduled", "lift_scheduled", "schedule_cancelled"]

    past = run_cli(settings, "suspend", customer, "--space", space, "--actor", "admin:ops", "--at", "2020-01-01")
    assert past.returncode == 2 and "not in the future" in past.stderr


async def test_an_unknown_time_zone_is_bad_input(workers: WorkerProcess, producer: AIOKafkaProducer,
                                                 tail: TopicTail) -> None:
    space = uid("space")
    await send(producer, SETTINGS_SPACES.name, space,
               {"space_id": space, "time_zone": "Mars/Olympus_Mons", "updated_at": now_iso()})
    [letter] = await tail.wait_for(DEADLETTER.name, key=space)
    assert letter["source_topic"] == SETTINGS_SPACES.name and "unknown time zone" in letter["error"]


async def test_fired_once_across_a_kill_and_a_takeover(isolated: Settings, tmp_path: Path) -> None:
    """kill -9 of the owning state worker just before the moments; a second worker takes the partitions over
    and fires every schedule, each exactly once."""
    space, customers = uid("space"), [uid("cust") for _ in range(12)]
    first = WorkerProcess(isolated, ("state",), log_path=tmp_path / "state-1.log").start()
    second = None
    try:
        await first.wait_ready()
        await produce(isolated, SUSPENSION_COMMANDS.name,
                      [builders.command(customer, space) | {"at": soon(6 + index % 3)}
                       for index, customer in enumerate(customers)])
        await wait_until(lambda: _count(isolated, "SELECT count(*) FROM schedules WHERE status = 'pending'",
                                        len(customers)), 30, "every schedule stored")
        first.kill()
        second = WorkerProcess(isolated, ("state",), log_path=tmp_path / "state-2.log").start()
        await second.wait_ready()
        await wait_until(lambda: _count(isolated, "SELECT count(*) FROM schedules WHERE status = 'fired'",
                                        len(customers)), 60, "every schedule fired")
        conn = await asyncpg.connect(isolated.database_url)
        try:
            fires = await conn.fetch("SELECT customer_id, count(*) AS n FROM command_history "
                                     "WHERE fired_delay_ms IS NOT NULL GROUP BY customer_id")
            suspended = await conn.fetchval("SELECT count(*) FROM customer_state WHERE suspended AND version = 2")
        finally:
            await conn.close()
        assert {row["customer_id"]: row["n"] for row in fires} == {customer: 1 for customer in customers}
        assert suspended == len(customers)
        events = [event for _, event in await read_topic(isolated, SUSPENSION_EVENTS.name) if event["type"] == "suspended"]
        assert sorted(event["customer_id"] for event in events) == sorted(customers)  # once each
    finally:
        for worker in (second, first):
            if worker is not None:
                worker.stop()


async def test_a_schedule_due_while_the_service_was_down_fires_at_start(isolated: Settings, tmp_path: Path) -> None:
    space, customer = uid("space"), uid("cust")
    worker = WorkerProcess(isolated, ("state",), log_path=tmp_path / "state-1.log").start()
    try:
        await worker.wait_ready()
        result = await asyncio.to_thread(run_cli, isolated, "lift", customer, "--space", space, "--actor", "admin:ops",
                                         "--at", soon(2), "--wait")
        assert result.returncode == 0, result.stderr
    finally:
        assert worker.stop() == 0  # down before the moment
    down_since = datetime.now(UTC)

    async def long_past_due() -> bool:
        return datetime.now(UTC) > down_since + timedelta(seconds=3)

    await wait_until(long_past_due, 10, "the moment to pass while the service is down")
    restarted = WorkerProcess(isolated, ("state",), log_path=tmp_path / "state-2.log").start()
    try:
        await restarted.wait_ready()
        await wait_until(lambda: _count(isolated, "SELECT count(*) FROM schedules WHERE status = 'fired'", 1), 30,
                         "the overdue schedule fired at start")
        [fired] = [h for h in await _history(isolated.database_url, customer) if h["fired_delay_ms"] is not None]
        assert fired["fired_delay_ms"] >= 3_000  # the delay is recorded
    finally:
        restarted.stop()


async def _count(settings: Settings, sql: str, at_least: int) -> bool:
    conn = await asyncpg.connect(settings.database_url)
    try:
        return int(await conn.fetchval(sql)) >= at_least
    finally:
        await conn.close()
