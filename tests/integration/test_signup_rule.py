"""Issue 2: the signup rule end to end, exactly-once effects, and dead letters, across real services."""

from __future__ import annotations

import asyncpg
import orjson
import pytest
from aiokafka import AIOKafkaProducer

from models import CustomerSignup, Reason, decode
from tests.integration import builders
from tests.support import TopicTail, WorkerProcess, publish_setting, send, uid, wait_until
from topics import (
    CUSTOMER_SIGNUPS,
    DEADLETTER,
    SETTINGS_PLANS,
    SETTINGS_SIGNUP,
    SUSPENSION_COMMANDS,
    SUSPENSION_STATE,
)
from workers.triggers.rules import command_id_for

pytestmark = pytest.mark.integration


async def _state_row(db: asyncpg.Pool, customer: str) -> asyncpg.Record | None:
    return await db.fetchrow("SELECT * FROM customer_state WHERE customer_id = $1", customer)


async def test_signup_in_space_that_keeps_new_members_suspended(
    workers: WorkerProcess, producer: AIOKafkaProducer, tail: TopicTail, db: asyncpg.Pool
) -> None:
    space_on, space_off = uid("space-on"), uid("space-off")
    marker_plan = uid("plan")
    await publish_setting(producer, workers, SETTINGS_SIGNUP.name, space_on, builders.signup_setting(space_on, True))
    await publish_setting(producer, workers, SETTINGS_SIGNUP.name, space_off, builders.signup_setting(space_off, False))
    await publish_setting(producer, workers, SETTINGS_PLANS.name, marker_plan, builders.plan_setting(space_off, marker_plan, True))
    suspended, active = uid("cust"), uid("cust")
    await send(producer, CUSTOMER_SIGNUPS.name, active, builders.signup(active, space_off))
    await send(producer, CUSTOMER_SIGNUPS.name, suspended, builders.signup(suspended, space_on))
    # A later signup of the active customer that does fire (its plan suspends joiners) travels the same
    # topic and partition: once its command is out, the first signup was processed and emitted nothing.
    await send(producer, CUSTOMER_SIGNUPS.name, active, builders.signup(active, space_off, plan=marker_plan))

    [state] = await tail.wait_for(SUSPENSION_STATE.name, customer_id=suspended)
    assert state["suspended"] is True
    assert state["reasons"] == ["signup"]
    assert state["version"] == 1
    assert state["space_id"] == space_on
    [command] = await tail.wait_for(SUSPENSION_COMMANDS.name, customer_id=suspended)
    assert command["action"] == "suspend" and command["reason"] == "signup" and command["actor"] == "system"
    assert command["cause"]["topic"] == CUSTOMER_SIGNUPS.name
    row = await _state_row(db, suspended)
    assert row["suspended"] and row["version"] == 1 and row["last_command_id"] == command["command_id"]

    await tail.wait_for(SUSPENSION_COMMANDS.name, customer_id=active, reason="plan")
    # The first signup suspended nothing: its decision is a register, then the marker's plan suspension.
    assert [(c["action"], c["reason"]) for c in tail.matching(SUSPENSION_COMMANDS.name, customer_id=active)] == [
        ("register", "signup"), ("suspend", "plan")]
    decided = await tail.wait_for(SUSPENSION_STATE.name, count=2, customer_id=active)
    assert [(s["version"], s["suspended"], s["reasons"]) for s in decided] == [(1, False, []), (2, True, ["plan"])]


async def test_duplicate_signup_gives_one_transition(
    workers: WorkerProcess, producer: AIOKafkaProducer, tail: TopicTail, db: asyncpg.Pool
) -> None:
    space, customer, event_id, plan = uid("space"), uid("cust"), uid("evt"), uid("plan")
    await publish_setting(producer, workers, SETTINGS_SIGNUP.name, space, builders.signup_setting(space, True))
    await publish_setting(producer, workers, SETTINGS_PLANS.name, plan, builders.plan_setting(space, plan, True))
    event = builders.signup(customer, space, event_id=event_id)
    await send(producer, CUSTOMER_SIGNUPS.name, customer, event)
    await send(producer, CUSTOMER_SIGNUPS.name, customer, event)
    # A later signup event on the same partition and path marks that both copies went through: its plan
    # suspends joiners, so it changes the state, and its state record follows any the copies caused.
    marker = builders.signup(customer, space, plan=plan)
    await send(producer, CUSTOMER_SIGNUPS.name, customer, marker)
    decoded = decode(CustomerSignup, orjson.dumps(marker))
    marker_signup_id = command_id_for(CUSTOMER_SIGNUPS.name, decoded, Reason.SIGNUP)
    marker_plan_id = command_id_for(CUSTOMER_SIGNUPS.name, decoded, Reason.PLAN)
    await tail.wait_for(SUSPENSION_STATE.name, customer_id=customer, last_command_id=marker_plan_id)

    commands = await tail.wait_for(SUSPENSION_COMMANDS.name, count=3, customer_id=customer, reason="signup")
    assert len(commands) == 3
    assert commands[0]["command_id"] == commands[1]["command_id"] != marker_signup_id
    history = await db.fetch("SELECT * FROM command_history WHERE customer_id = $1 ORDER BY id", customer)
    assert [(h["command_id"], h["outcome"], h["version_after"]) for h in history] == [
        (commands[0]["command_id"], "changed", 1), (marker_signup_id, "noop", 1), (marker_plan_id, "changed", 2)]
    # One state record per transition: the copies made one, the marker the next.
    assert [(s["version"], s["reasons"]) for s in tail.matching(SUSPENSION_STATE.name, customer_id=customer)] == [
        (1, ["signup"]), (2, ["signup", "plan"])]


async def test_redelivered_command_is_a_noop(
    workers: WorkerProcess, producer: AIOKafkaProducer, tail: TopicTail, db: asyncpg.Pool
) -> None:
    space, customer = uid("space"), uid("cust")
    suspend = builders.command(customer, space)
    for _ in range(3):
        await send(producer, SUSPENSION_COMMANDS.name, customer, suspend)
    lift = builders.command(customer, space, action="lift")
    await send(producer, SUSPENSION_COMMANDS.name, customer, lift)
    await send(producer, SUSPENSION_COMMANDS.name, customer, lift)
    # A marker behind the copies on the same partition that changes the state: once its state record is
    # out, every copy before it was applied and published whatever it would.
    marker = builders.command(customer, space, reason="plan")
    await send(producer, SUSPENSION_COMMANDS.name, customer, marker)
    await tail.wait_for(SUSPENSION_STATE.name, customer_id=customer, last_command_id=marker["command_id"])

    row = await _state_row(db, customer)
    assert row["version"] == 3 and row["suspended"] is True and row["last_command_id"] == marker["command_id"]
    history = await db.fetch("SELECT command_id, outcome FROM command_history WHERE customer_id = $1 ORDER BY id",
                             customer)
    assert [h["command_id"] for h in history] == [suspend["command_id"], lift["command_id"], marker["command_id"]]
    states = tail.matching(SUSPENSION_STATE.name, customer_id=customer)
    assert [(s["version"], s["suspended"]) for s in states] == [(1, True), (2, False), (3, True)]


@pytest.mark.parametrize(
    ("topic", "value", "error_part"),
    [
        (CUSTOMER_SIGNUPS.name, b"this is not json", "Invalid JSON"),
        (CUSTOMER_SIGNUPS.name, b'{"event_id": "e1", "space_id": "s"}', "occurred_at: Field required"),
        (CUSTOMER_SIGNUPS.name, b'{"event_id": 7, "occurred_at": "2026-11-25T10:00:00Z", "space_id": "s",'
                                b' "customer_id": "KEY"}', "event_id: Input should be a valid string"),
        (SUSPENSION_COMMANDS.name, b'{"command_id": "c"}', "issued_at: Field required"),
        (SUSPENSION_COMMANDS.name, b'\xff\xfe\x00garbage', "Invalid JSON"),
        (SUSPENSION_COMMANDS.name, b'{"command_id": "c", "issued_at": "2026-11-25T10:00:00Z", "space_id": "s",'
                                   b' "customer_id": "KEY", "action": "delete", "reason": "manual",'
                                   b' "actor": "system"}', "action: Input should be 'suspend', 'lift', 'register', 'cancel_schedule' or 'release'"),
    ],
)
async def test_bad_records_go_to_deadletter(
    workers: WorkerProcess, producer: AIOKafkaProducer, tail: TopicTail, db: asyncpg.Pool,
    topic: str, value: bytes, error_part: str,
) -> None:
    key = uid("bad")
    value = value.replace(b"KEY", key.encode())
    await send(producer, topic, key, value)
    [letter] = await tail.wait_for(DEADLETTER.name, key=key)
    assert letter["source_topic"] == topic
    assert error_part in letter["error"]
    assert letter["worker"] in ("triggers", "state")
    if letter["value"] is not None:
        assert letter["value"].encode() == value
    else:
        import base64

        assert base64.b64decode(letter["value_b64"]) == value
    assert await _state_row(db, key) is None

    # The worker keeps going: a good record after the bad one is processed.
    space, customer = uid("space"), uid("cust")
    good = builders.command(customer, space)
    await send(producer, SUSPENSION_COMMANDS.name, customer, good)
    await tail.wait_for(SUSPENSION_STATE.name, customer_id=customer)


async def test_state_rows_history_and_topic_agree(
    workers: WorkerProcess, producer: AIOKafkaProducer, tail: TopicTail, db: asyncpg.Pool
) -> None:
    space = uid("space")
    customers = [uid("cust") for _ in range(20)]
    for index, customer in enumerate(customers):
        await send(producer, SUSPENSION_COMMANDS.name, customer, builders.command(customer, space))
        if index % 2:
            await send(producer, SUSPENSION_COMMANDS.name, customer,
                       builders.command(customer, space, action="lift"))
    for index, customer in enumerate(customers):
        await tail.wait_for(SUSPENSION_STATE.name, count=1 + index % 2, customer_id=customer)

    rows = {r["customer_id"]: r for r in await db.fetch(
        "SELECT * FROM customer_state WHERE space_id = $1", space)}
    assert set(rows) == set(customers)
    for customer in customers:
        latest = tail.matching(SUSPENSION_STATE.name, customer_id=customer)[-1]
        row = rows[customer]
        assert (latest["version"], latest["suspended"], latest["last_command_id"]) == (
            row["version"], row["suspended"], row["last_command_id"])
        changed = await db.fetchval(
            "SELECT count(*) FROM command_history WHERE customer_id = $1 AND outcome = 'changed'", customer)
        assert changed == row["version"]

    # Published outbox rows are deleted with the next batch, or as soon as the worker is idle.
    async def outbox_empty() -> bool:
        return await db.fetchval("SELECT count(*) FROM outbox") == 0

    await wait_until(outbox_empty, 30, "the outbox emptied once published")
