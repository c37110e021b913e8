"""Issue 14: scheduled suspensions and lifts, in the space's own time zone, fired once whatever happens."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from tests.integration import builders
from tests.reliability.harness import produce, read_topic, stop_between_publishing_and_marking
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


async def test_fired_once_across_a_kill_between_firing_and_marking_fired(isolated: Settings, tmp_path: Path) -> None:
    """The owning state worker is stopped the moment a fire command of it is on the topic, found to have
    published fires it has not applied yet (the schedules still pending), and killed there: the restarted
    worker takes the partitions over and every schedule is applied exactly once."""
    space, customers = uid("space"), [uid("cust") for _ in range(12)]
    first = WorkerProcess(isolated, ("state",), log_path=tmp_path / "state-1.log").start()
    second = None
    watcher = AIOKafkaConsumer(bootstrap_servers=isolated.kafka_bootstrap_servers, group_id=None,
                               enable_auto_commit=False, auto_offset_reset="earliest",
                               fetch_max_wait_ms=isolated.kafka_fetch_max_wait_ms)
    try:
        await first.wait_ready()
        await watcher.start()
        partitions = [TopicPartition(SUSPENSION_COMMANDS.name, p)
                      for p in sorted(watcher.partitions_for_topic(SUSPENSION_COMMANDS.name) or ())]
        watcher.assign(partitions)
        await watcher.seek_to_beginning(*partitions)
        # Three moments, a few seconds apart: if the worker applied the fires of one before it could be
        # stopped, it runs on and is stopped at the next.
        await produce(isolated, SUSPENSION_COMMANDS.name,
                      [builders.command(customer, space) | {"at": soon(5 + 3 * (index % 3))}
                       for index, customer in enumerate(customers)])
        await wait_until(lambda: _count(isolated, "SELECT count(*) FROM schedules WHERE status = 'pending'",
                                        len(customers)), 30, "every schedule stored")
        fired_not_marked = await stop_between_publishing_and_marking(
            isolated, first, watcher, lambda command: command["schedule_id"] if command["command_id"].startswith("fire:")
            else None, "SELECT schedule_id FROM schedules WHERE status = 'pending'")
        first.kill()
        assert fired_not_marked, "the kill came between a fire and its effect"
        second = WorkerProcess(isolated, ("state",), log_path=tmp_path / "state-2.log").start()
        await second.wait_ready()
        await wait_until(lambda: _count(isolated, "SELECT count(*) FROM schedules WHERE status = 'fired'",
                                        len(customers)), 60, "every schedule fired")
        conn = await asyncpg.connect(isolated.database_url)
        try:
            fires = await conn.fetch("SELECT customer_id, count(*) AS n FROM command_history "
                                     "WHERE fired_delay_ms IS NOT NULL GROUP BY customer_id")
            suspended = await conn.fetchval("SELECT count(*) FROM customer_state WHERE suspended AND version = 2")
            schedule_of = {row["customer_id"]: row["schedule_id"]
                           for row in await conn.fetch("SELECT customer_id, schedule_id FROM schedules")}
        finally:
            await conn.close()
        assert {row["customer_id"]: row["n"] for row in fires} == {customer: 1 for customer in customers}
        assert suspended == len(customers)
        events = [event for _, event in await read_topic(isolated, SUSPENSION_EVENTS.name) if event["type"] == "suspended"]
        assert sorted(event["customer_id"] for event in events) == sorted(customers)  # once each
        # A fire published again (by the restarted owner) carries the same id: one fire id per schedule.
        fire_ids: dict[str, set[str]] = {}
        for _, command in await read_topic(isolated, SUSPENSION_COMMANDS.name):
            if command["command_id"].startswith("fire:"):
                fire_ids.setdefault(command["customer_id"], set()).add(command["command_id"])
        assert {customer: len(ids) for customer, ids in fire_ids.items()} == {customer: 1 for customer in customers}
        assert all(next(iter(ids)).startswith(f"fire:{schedule_of[customer]}:") for customer, ids in fire_ids.items())
    finally:
        await watcher.stop()
        for worker in (second, first):
            if worker is not None:
                worker.stop()


async def test_a_schedule_due_while_the_service_was_down_fires_at_start(isolated: Settings, tmp_path: Path) -> None:
    space, customer = uid("space"), uid("cust")
    worker = WorkerProcess(isolated, ("state",), log_path=tmp_path / "state-1.log").start()
    try:
        await worker.wait_ready()
        # Far enough ahead for the CLI process to start on a busy machine (it refuses a moment in the past).
        moment = soon(8)
        result = await asyncio.to_thread(run_cli, isolated, "lift", customer, "--space", space, "--actor", "admin:ops",
                                         "--at", moment, "--wait")
        assert result.returncode == 0, result.stderr
    finally:
        assert worker.stop() == 0
    assert datetime.now(UTC) < datetime.fromisoformat(moment), "the worker was not down before the moment"

    async def long_past_due() -> bool:
        return datetime.now(UTC) > datetime.fromisoformat(moment) + timedelta(seconds=3)

    await wait_until(long_past_due, 20, "the moment to pass while the service is down")
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
