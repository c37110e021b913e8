"""Issue 23: suspension for overdue invoices, and the opt-in release when they are paid.

Moments are a few seconds ahead (`suspend_after_days: 0`, `due_at` just ahead). Negative outcomes are
shown by what happened later in the same partition, never by waiting: a marker invoice of the same
customer falling overdue after the moment, or a later record of the same customer applied.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
from aiokafka import AIOKafkaProducer

from suspensions import access, overview
from suspensions.access import Role
from suspensions.local.processes import WorkerProcess as LocalWorkerProcess
from suspensions.local.processes import metric_total
from tests.operator_support import auth
from tests.reliability.harness import produce, read_topic
from tests.support import TopicTail, WorkerProcess, run_cli, send, uid, wait_for_http, wait_until
from topics import (
    DEADLETTER,
    INVOICE_STATUS,
    SETTINGS_OVERDUE,
    SETTINGS_SPACES,
    SUSPENSION_COMMANDS,
    SUSPENSION_EVENTS,
    SUSPENSION_STATE,
)
from workers.runtime.config import Settings

pytestmark = pytest.mark.integration


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def ahead(seconds: float) -> datetime:
    return datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=seconds)


def invoice(space: str, customer: str, invoice_id: str, status: str, due_at: datetime | None = None,
            event_id: str | None = None) -> dict[str, Any]:
    record: dict[str, Any] = {"event_id": event_id or uid("ev"), "occurred_at": iso(datetime.now(UTC)),
                              "space_id": space, "customer_id": customer, "invoice_id": invoice_id,
                              "status": status, "amount": "120.00", "currency": "EUR"}
    if due_at is not None:
        record["due_at"] = iso(due_at)
    return record


async def set_rule(producer: AIOKafkaProducer, db: asyncpg.Pool | str, space: str, days: int | None,
                   lift_when_paid: bool = False, missed: str = "bill",
                   updated_at: datetime | None = None) -> datetime:
    """Publish the space's rule and wait until the overdue workers stored it."""
    updated = updated_at or datetime.now(UTC)
    await send(producer, SETTINGS_OVERDUE.name, space,
               {"space_id": space, "suspend_after_days": days, "lift_when_paid": lift_when_paid,
                "missed_invoices": missed, "updated_at": iso(updated)})

    async def stored() -> bool:
        sql = "SELECT 1 FROM overdue_settings WHERE space_id = $1 AND updated_at = $2"
        if isinstance(db, str):
            conn = await asyncpg.connect(db)
            try:
                return bool(await conn.fetchval(sql, space, updated))
            finally:
                await conn.close()
        return bool(await db.fetchval(sql, space, updated))

    await wait_until(stored, 30, f"the overdue rule of {space} stored")
    return updated


async def publish(settings: Settings, *records: dict[str, Any]) -> None:
    await produce(settings, INVOICE_STATUS.name, list(records))


async def invoice_status(db: asyncpg.Pool, customer: str, invoice_id: str) -> str | None:
    status: str | None = await db.fetchval(
        "SELECT status FROM customer_invoices WHERE customer_id = $1 AND invoice_id = $2", customer, invoice_id)
    return status


def overdue_commands(tail: TopicTail, customer: str, action: str = "suspend") -> list[dict[str, Any]]:
    return [command for command in tail.matching(SUSPENSION_COMMANDS.name, customer_id=customer, action=action)
            if command["actor"] == "rule:overdue"]


async def test_suspended_within_a_second_of_the_moment_and_released_with_lift_when_paid(
        settings: Settings, workers: WorkerProcess, producer: AIOKafkaProducer, tail: TopicTail,
        db: asyncpg.Pool) -> None:
    space, customer = uid("space"), uid("cust")
    await set_rule(producer, db, space, 0, lift_when_paid=True, missed="waive")
    due = ahead(4)
    issued = invoice(space, customer, "inv-1", "issued", due)
    await publish(settings, issued, invoice(space, customer, "inv-1", "issued", due))  # a duplicate issue

    [state] = await tail.wait_for(SUSPENSION_STATE.name, customer_id=customer, suspended=True, timeout_s=30)
    assert state["reasons"] == ["overdue"]
    assert datetime.fromisoformat(state["suspended_at"]) == due  # issued at the moment itself
    [suspended] = tail.matching(SUSPENSION_EVENTS.name, customer_id=customer, type="suspended")
    assert (suspended["actor"], suspended["source"]) == ("rule:overdue", "overdue_rule")
    assert suspended["cause"] == {"topic": "invoice.status", "event_id": issued["event_id"], "invoice_id": "inv-1"}
    applied_after = datetime.fromisoformat(suspended["occurred_at"]) - due
    assert timedelta(0) <= applied_after < timedelta(seconds=1), applied_after
    history = await db.fetch("SELECT action, reason, actor, outcome, note FROM command_history "
                             "WHERE customer_id = $1 ORDER BY id", customer)
    assert [(h["action"], h["reason"], h["actor"], h["outcome"]) for h in history] == [
        ("suspend", "overdue", "rule:overdue", "changed")]
    assert "inv-1" in history[0]["note"]

    await publish(settings, invoice(space, customer, "inv-1", "paid"))
    [lifted] = await tail.wait_for(SUSPENSION_EVENTS.name, customer_id=customer, type="lifted")
    assert (lifted["actor"], lifted["source"], lifted["missed_invoices"]) == ("rule:overdue", "overdue_rule", "waive")
    assert lifted["reasons_before"] == ["overdue"] and lifted["reasons_after"] == []
    assert len(overdue_commands(tail, customer)) == 1  # the duplicate issue made no second suspension
    # The console's overview counts the release that lifted as the suspension's end.
    async with db.acquire() as conn:
        [ended] = await overview.suspensions(conn, space, due - timedelta(hours=1), datetime.now(UTC) + timedelta(hours=1))
    assert (ended.customer_id, ended.lifted_by, ended.missed_invoices) == (customer, "rule:overdue", "waive")
    assert ended.lifted_at is not None and ended.reasons[0][0] == "overdue"


async def test_paid_before_the_moment_never_suspends(settings: Settings, workers: WorkerProcess,
                                                     producer: AIOKafkaProducer, tail: TopicTail,
                                                     db: asyncpg.Pool) -> None:
    space, customer = uid("space"), uid("cust")
    await set_rule(producer, db, space, 0)
    due = ahead(3)
    # inv-0 is paid before it was ever seen issued; inv-1 paid before its moment; the marker inv-2 falls
    # overdue a second after both moments, so the firer had passed them when it fires.
    await publish(settings, invoice(space, customer, "inv-0", "paid"),
                  invoice(space, customer, "inv-0", "issued", due),
                  invoice(space, customer, "inv-1", "issued", due),
                  invoice(space, customer, "inv-1", "paid"),
                  invoice(space, customer, "inv-2", "issued", due + timedelta(seconds=1)))
    await tail.wait_for(SUSPENSION_STATE.name, customer_id=customer, suspended=True, timeout_s=30)
    assert [command["cause"]["invoice_id"] for command in overdue_commands(tail, customer)] == ["inv-2"]
    assert (await invoice_status(db, customer, "inv-0"), await invoice_status(db, customer, "inv-1")) == (
        "paid", "paid")


async def test_paid_after_the_moment_without_lift_when_paid_stays_suspended(
        settings: Settings, workers: WorkerProcess, producer: AIOKafkaProducer, tail: TopicTail,
        db: asyncpg.Pool) -> None:
    space, customer = uid("space"), uid("cust")
    await set_rule(producer, db, space, 0, lift_when_paid=False)
    await publish(settings, invoice(space, customer, "inv-1", "issued", ahead(2)))
    await tail.wait_for(SUSPENSION_STATE.name, customer_id=customer, suspended=True, timeout_s=30)
    # The payment; once it is stored, a later record of the same customer (same partition, so a later batch,
    # taken only after the payment's batch published what it wrote): once that one is stored too, whatever the
    # payment published is on the topic.
    await publish(settings, invoice(space, customer, "inv-1", "paid"))

    async def paid() -> bool:
        return await invoice_status(db, customer, "inv-1") == "paid"

    await wait_until(paid, 30, "the payment applied")
    await publish(settings, invoice(space, customer, "later", "voided"))
    await wait_until(lambda: invoice_status(db, customer, "later"), 30, "the later record applied")
    commands = [command for _, command in await read_topic(settings, SUSPENSION_COMMANDS.name)
                if command["customer_id"] == customer]
    assert [command["action"] for command in commands] == ["suspend"]
    state = await db.fetchrow("SELECT suspended, reasons FROM customer_state WHERE customer_id = $1", customer)
    assert (state["suspended"], state["reasons"]) == (True, ["overdue"])


async def test_another_reason_keeps_the_customer_suspended_and_a_void_settles_too(
        settings: Settings, workers: WorkerProcess, producer: AIOKafkaProducer, tail: TopicTail,
        db: asyncpg.Pool) -> None:
    space, customer = uid("space"), uid("cust")
    await set_rule(producer, db, space, 0, lift_when_paid=True)
    result = await asyncio.to_thread(run_cli, settings, "suspend", customer, "--space", space, "--actor",
                                     "admin:ops", "--wait")
    assert result.returncode == 0, result.stdout + result.stderr
    due = ahead(2)
    await publish(settings, invoice(space, customer, "inv-1", "issued", due),
                  invoice(space, customer, "inv-2", "issued", due))
    await tail.wait_for(SUSPENSION_STATE.name, customer_id=customer, reasons=["manual", "overdue"], timeout_s=30)
    assert len(await tail.wait_for(SUSPENSION_COMMANDS.name, count=2, customer_id=customer,
                                   actor="rule:overdue")) == 2  # one command per invoice, one reason
    history = await db.fetch("SELECT outcome, note FROM command_history WHERE customer_id = $1 AND reason = 'overdue' "
                             "ORDER BY id", customer)
    assert sorted(h["outcome"] for h in history) == ["changed", "noop"]  # both invoices named in history
    assert {"inv-1", "inv-2"} == {note.split()[1] for note in (h["note"] for h in history)}

    # One of two overdue invoices settled: nothing yet. The second (voided): the overdue reason goes.
    await publish(settings, invoice(space, customer, "inv-1", "paid"), invoice(space, customer, "inv-2", "voided"))
    [removed] = await tail.wait_for(SUSPENSION_EVENTS.name, customer_id=customer, type="reason_removed")
    assert (removed["reasons_before"], removed["reasons_after"]) == (["manual", "overdue"], ["manual"])
    state = await db.fetchrow("SELECT suspended, reasons FROM customer_state WHERE customer_id = $1", customer)
    assert (state["suspended"], state["reasons"]) == (True, ["manual"])
    assert len(overdue_commands(tail, customer, "release")) == 1


async def test_a_rule_turned_off_before_the_moment_does_not_fire_until_turned_on_again(
        settings: Settings, workers: WorkerProcess, producer: AIOKafkaProducer, tail: TopicTail,
        db: asyncpg.Pool) -> None:
    space, customer = uid("space"), uid("cust")
    await set_rule(producer, db, space, 0)
    due = ahead(3)
    await publish(settings, invoice(space, customer, "inv-1", "issued", due))
    await wait_until(lambda: invoice_status(db, customer, "inv-1"), 30, "the invoice stored")
    await set_rule(producer, db, space, None)

    async def past_the_moment() -> bool:
        return datetime.now(UTC) > due + timedelta(seconds=1.5)

    await wait_until(past_the_moment, 30, "the invoice's moment to pass")
    on_again = await set_rule(producer, db, space, 0)  # applies from its updated_at on
    [state] = await tail.wait_for(SUSPENSION_STATE.name, customer_id=customer, suspended=True, timeout_s=30)
    # Fired when the rule came back, not at the moment it passed while off.
    assert datetime.fromisoformat(state["suspended_at"]) == on_again
    assert len(overdue_commands(tail, customer)) == 1


async def test_suspended_once_across_a_kill_before_the_moment_and_a_crash_before_the_mark(
        isolated: Settings, tmp_path: Path) -> None:
    """The owning worker is killed (-9) just before the moment: its successor fires every invoice on time, once.
    That one is killed too, and the state a crash between publishing and marking leaves (the suspensions on
    the topic, half the invoices not marked fired) is made by hand: the next owner fires those again, with
    the same ids, and each customer is still suspended exactly once. (A crash inside that window is too short
    to hit on purpose: the mark is one statement after the broker's acknowledgement.)"""
    space, customers = uid("space"), [uid("cust") for _ in range(12)]
    producer = AIOKafkaProducer(bootstrap_servers=isolated.kafka_bootstrap_servers, acks="all")
    await producer.start()
    workers: list[LocalWorkerProcess] = []

    def start(index: int) -> LocalWorkerProcess:
        worker = WorkerProcess(isolated, ("overdue", "state"), log_path=tmp_path / f"overdue-{index}.log").start()
        workers.append(worker)
        return worker

    try:
        first = start(1)
        await first.wait_ready()
        await set_rule(producer, isolated.database_url, space, 0, lift_when_paid=True)
        due = ahead(10)
        await publish(isolated, *(invoice(space, customer, f"inv-{index}", "issued", due)
                                  for index, customer in enumerate(customers)))
        await wait_until(lambda: _count(isolated, "SELECT count(*) FROM customer_invoices", len(customers)), 30,
                         "every invoice stored")
        assert datetime.now(UTC) < due, "the invoices were stored too late for a kill before their moment"
        first.kill()
        second = start(2)
        await second.wait_ready()
        await wait_until(lambda: _count(isolated, "SELECT count(*) FROM customer_state WHERE suspended",
                                        len(customers)), 60, "every customer suspended")
        await wait_until(lambda: _count(isolated, "SELECT count(*) FROM customer_invoices WHERE fired_at IS NOT NULL",
                                        len(customers)), 30, "every invoice marked fired")
        second.kill()
        refired = customers[::2]
        conn = await asyncpg.connect(isolated.database_url)
        try:
            await conn.execute("UPDATE customer_invoices SET fired_at = NULL, fired_command_id = NULL "
                               "WHERE customer_id = ANY($1::text[])", refired)
        finally:
            await conn.close()
        third = start(3)
        await third.wait_ready()
        await wait_until(lambda: _count(isolated, "SELECT count(*) FROM customer_invoices WHERE fired_at IS NOT NULL",
                                        len(customers)), 60, "the unmarked invoices fired again")
        copies: dict[str, list[str]] = {}
        for _, command in await read_topic(isolated, SUSPENSION_COMMANDS.name):
            copies.setdefault(command["customer_id"], []).append(command["command_id"])
        assert {customer: len(found) for customer, found in copies.items()} == {
            customer: 2 if customer in refired else 1 for customer in customers}
        assert all(len(set(found)) == 1 for found in copies.values())  # a copy carries the same id

        async def copies_applied() -> bool:  # the second copies read by the state worker: duplicates
            return await asyncio.to_thread(metric_total, third.http_port,
                                           "suspensions_commands_duplicate_total") >= len(refired)

        await wait_until(copies_applied, 30, "the second copies read as duplicates")
        conn = await asyncpg.connect(isolated.database_url)
        try:
            applied = await conn.fetch("SELECT customer_id, count(*) AS n FROM command_history "
                                       "WHERE reason = 'overdue' GROUP BY customer_id")
            fired_after = await conn.fetchval("SELECT min(suspended_at) FROM customer_state")
        finally:
            await conn.close()
        assert {row["customer_id"]: row["n"] for row in applied} == {customer: 1 for customer in customers}
        assert fired_after == due  # issued at the moment itself
        events = [event for _, event in await read_topic(isolated, SUSPENSION_EVENTS.name)]
        assert sorted(event["customer_id"] for event in events if event["type"] == "suspended") == sorted(customers)
    finally:
        await producer.stop()
        for worker in reversed(workers):
            worker.stop()


async def _count(settings: Settings, sql: str, expected: int) -> bool:
    conn = await asyncpg.connect(settings.database_url)
    try:
        return bool(await conn.fetchval(sql) == expected)
    finally:
        await conn.close()


async def test_operators_see_open_overdue_and_settled_invoices_in_the_space_zone(
        settings: Settings, workers: WorkerProcess, producer: AIOKafkaProducer, tail: TopicTail,
        db: asyncpg.Pool) -> None:
    space, other_space, customer = uid("space"), uid("space"), uid("cust")
    await send(producer, SETTINGS_SPACES.name, space,
               {"space_id": space, "time_zone": "Asia/Tokyo", "updated_at": iso(datetime.now(UTC))})
    await set_rule(producer, db, space, 0)
    due = ahead(2)
    later = datetime(2099, 1, 1, tzinfo=UTC)
    await publish(settings, invoice(space, customer, "inv-late", "issued", due),
                  invoice(space, customer, "inv-open", "issued", later),
                  invoice(space, customer, "inv-paid", "paid"))
    await tail.wait_for(SUSPENSION_STATE.name, customer_id=customer, reasons=["overdue"], timeout_s=30)
    async with db.acquire() as conn:
        token = await access.create_token(conn, uid("viewer"), Role.VIEWER, [space])
        other = await access.create_token(conn, uid("viewer"), Role.VIEWER, [other_space])
    await wait_for_http(f"http://127.0.0.1:{workers.api_port}/healthz")
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{workers.api_port}", timeout=30) as api:
        url = f"/api/v1/spaces/{space}/customers/{customer}/invoices"

        async def zone_read() -> list[dict[str, Any]] | None:  # the API caches the spaces' zones for seconds
            answer = await api.get(url, headers=auth(token))
            assert answer.status_code == 200, answer.text
            found: list[dict[str, Any]] = answer.json()
            return found if found and found[0]["time_zone"] == "Asia/Tokyo" else None

        views = {view["invoice_id"]: view for view in await wait_until(zone_read, 30, "the space's zone")}
        assert (views["inv-late"]["status"], views["inv-late"]["overdue"], views["inv-late"]["suspended_for"]) == (
            "open", True, True)
        assert datetime.fromisoformat(views["inv-late"]["due_at"]) == due
        assert datetime.fromisoformat(views["inv-late"]["due_local"]).utcoffset() == timedelta(hours=9)
        assert "Asia/Tokyo" in views["inv-late"]["when_due"] and "UTC" in views["inv-late"]["when_due"]
        assert (views["inv-open"]["overdue"], datetime.fromisoformat(views["inv-open"]["overdue_at"])) == (False, later)
        assert (views["inv-paid"]["status"], views["inv-paid"]["due_at"]) == ("paid", None)
        # Another space's token: as if the customer did not exist.
        assert (await api.get(url, headers=auth(other))).status_code == 404
        assert (await api.get(f"/api/v1/spaces/{other_space}/customers/{customer}/invoices",
                              headers=auth(other))).status_code == 404
        # The customers list filtered by reason.
        listed = await api.get(f"/api/v1/spaces/{space}/customers", params={"reason": "overdue"}, headers=auth(token))
        assert [state["customer_id"] for state in listed.json()["customers"]] == [customer]
        assert (await api.get(f"/api/v1/spaces/{space}/customers", params={"reason": "plan"},
                              headers=auth(token))).json()["customers"] == []
    result = await asyncio.to_thread(run_cli, settings, "status", customer, "--json")
    assert result.returncode == 0, result.stderr
    shown = {view["invoice_id"]: view for view in orjson.loads(result.stdout)["invoices"]}
    assert (shown["inv-late"]["overdue"], shown["inv-open"]["overdue"], shown["inv-paid"]["status"]) == (
        True, False, "paid")
    text = await asyncio.to_thread(run_cli, settings, "status", customer)
    assert "inv-late" in text.stdout and "overdue" in text.stdout and "Asia/Tokyo" in text.stdout


async def test_bad_invoice_records_and_settings_are_dead_lettered_and_the_rest_goes_on(
        settings: Settings, workers: WorkerProcess, producer: AIOKafkaProducer, tail: TopicTail,
        db: asyncpg.Pool) -> None:
    space, customer = uid("space"), uid("cust")
    bad = [invoice(space, customer, f"inv{chr(0)}", "issued", ahead(60)),  # a NUL
           invoice(space, customer, "no-due", "issued"),  # issued without due_at
           invoice(space, customer, "big", "paid") | {"amount": "1e400"}]
    await publish(settings, *bad, invoice(space, customer, "good", "issued", ahead(3600)))
    await wait_until(lambda: invoice_status(db, customer, "good"), 30, "the good record applied")
    letters = await tail.wait_for(DEADLETTER.name, count=3, key=customer, source_topic=INVOICE_STATUS.name)
    errors = [letter["error"] for letter in letters]
    for part in ("invoice_id: must not contain control characters", "due_at is required", "amount"):
        assert sum(part in error for error in errors) == 1, (part, errors)
    assert await db.fetchval("SELECT count(*) FROM customer_invoices WHERE customer_id = $1", customer) == 1
    # A setting whose key is not its space, and one with negative days.
    await send(producer, SETTINGS_OVERDUE.name, "not-the-space",
               {"space_id": space, "suspend_after_days": 1, "updated_at": iso(datetime.now(UTC))})
    await send(producer, SETTINGS_OVERDUE.name, space,
               {"space_id": space, "suspend_after_days": -1, "updated_at": iso(datetime.now(UTC))})
    [mismatch] = await tail.wait_for(DEADLETTER.name, key="not-the-space", source_topic=SETTINGS_OVERDUE.name)
    assert "does not match its space_id" in mismatch["error"]
    [negative] = await tail.wait_for(DEADLETTER.name, key=space, source_topic=SETTINGS_OVERDUE.name)
    assert "suspend_after_days" in negative["error"]
    assert await db.fetchval("SELECT count(*) FROM overdue_settings WHERE space_id = $1", space) == 0
    assert workers.running.poll() is None, "the worker process stopped"
