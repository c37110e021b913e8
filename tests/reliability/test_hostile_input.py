"""Issues 7 and 21: hostile input goes to deadletter with a clear error, changes nothing, and the workers stay
up; the ordinary record after it on the same partition is applied, once."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import orjson
import pytest
from aiokafka import AIOKafkaProducer

from tests.integration import builders
from tests.support import TopicTail, WorkerProcess, now_iso, publish_setting, send, uid
from topics import (
    CRM_OPPORTUNITIES,
    CUSTOMER_PLAN_CHANGES,
    CUSTOMER_SIGNUPS,
    DEADLETTER,
    INVOICE_JOBS,
    INVOICE_JOBS_ACCEPTED,
    SETTINGS_CRM_STAGES,
    SETTINGS_PLANS,
    SETTINGS_SIGNUP,
    SETTINGS_SPACES,
    SUSPENSION_COMMANDS,
    SUSPENSION_STATE,
)
from workers.runtime.config import Settings

pytestmark = pytest.mark.integration

SQL = "'); DROP TABLE customer_state; --"


def _command_with(**change: object) -> bytes:
    return orjson.dumps({k: v for k, v in (builders.command("KEY", "space-h") | change).items() if v is not None})


CASES = [
    ("invalid utf-8", SUSPENSION_COMMANDS.name, b'{"command_id": "\xff\xfe"}', "Invalid JSON"),
    ("deeply nested", SUSPENSION_COMMANDS.name, b'{"note":' + b"[" * 100_000 + b"]" * 100_000 + b"}",
     "recursion limit"),
    ("wrong type", SUSPENSION_COMMANDS.name, _command_with(issued_at=1700000000), "issued_at"),
    ("missing field", SUSPENSION_COMMANDS.name, _command_with(actor=None), "actor: Field required"),
    ("unknown action", SUSPENSION_COMMANDS.name, _command_with(action="ban"), "action: Input should be"),
    ("unknown reason", SUSPENSION_COMMANDS.name, _command_with(reason="mood"), "reason: Input should be"),
    ("timestamp without zone", SUSPENSION_COMMANDS.name, _command_with(issued_at="2026-11-25T10:00:00"),
     "timezone"),
    ("ten megabytes", SUSPENSION_COMMANDS.name,
     _command_with(padding="x" * (10 * 1024 * 1024)), "exceeds the limit"),
    ("ten megabytes event", CUSTOMER_SIGNUPS.name,
     orjson.dumps(builders.signup("KEY", "space-h") | {"padding": "x" * (10 * 1024 * 1024)}), "exceeds the limit"),
    ("signup not json", CUSTOMER_SIGNUPS.name, b"\x00\x01binary", "Invalid JSON"),
    ("invoice without amount", INVOICE_JOBS.name,
     orjson.dumps({k: v for k, v in builders.invoice_job("KEY", "space-h").items() if k != "amount"}),
     "amount: Field required"),
]


@pytest.fixture(scope="module")
async def big_producer(settings: Settings) -> AsyncIterator[AIOKafkaProducer]:
    client = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, max_request_size=16 * 1024 * 1024)
    await client.start()
    yield client
    await client.stop()


@pytest.mark.parametrize(("case", "topic", "value", "error_part"), CASES, ids=[c[0] for c in CASES])
async def test_hostile_record_is_dead_lettered(
    workers: WorkerProcess, big_producer: AIOKafkaProducer, tail: TopicTail, db: asyncpg.Pool,
    case: str, topic: str, value: bytes, error_part: str,
) -> None:
    key = uid("hostile")
    value = value.replace(b'"KEY"', orjson.dumps(key))
    await send(big_producer, topic, key, value)
    [letter] = await tail.wait_for(DEADLETTER.name, key=key, timeout_s=60)
    assert letter["source_topic"] == topic
    assert error_part in letter["error"], letter["error"]
    assert len(orjson.dumps(letter)) < 1024 * 1024  # the dead letter itself stays publishable
    # Nothing applied: the letter commits in the same transaction as any effect would, so none is coming.
    for table in ("command_history", "customer_state", "invoice_decisions"):
        assert await db.fetchval(f"SELECT count(*) FROM {table} WHERE customer_id = $1", key) == 0, table
    await _workers_still_apply(big_producer, tail)


@pytest.mark.parametrize("key", [None, "somebody-else"])
async def test_key_missing_or_not_matching(workers: WorkerProcess, producer: AIOKafkaProducer, tail: TopicTail,
                                           db: asyncpg.Pool, key: str | None) -> None:
    customer = uid("cust")
    command = builders.command(customer, uid("space"))
    await send(producer, SUSPENSION_COMMANDS.name, key, command)
    [letter] = await tail.wait_for(DEADLETTER.name, timeout_s=30,
                                   value=orjson.dumps(command).decode())
    assert "does not match customer_id" in letter["error"]
    assert await db.fetchval("SELECT count(*) FROM customer_state WHERE customer_id = $1", customer) == 0


async def test_sql_looking_text_is_stored_verbatim(workers: WorkerProcess, producer: AIOKafkaProducer,
                                                   tail: TopicTail, db: asyncpg.Pool) -> None:
    customer, space = f"{uid('cust')}{SQL}", f"{uid('space')}{SQL}"
    command = builders.command(customer, space, note=SQL, command_id=f"{uid('cmd')}{SQL}",
                               cause={"topic": SQL, "event_id": SQL})
    command["actor"] = f"admin:{SQL.replace(' ', '')}"
    # Every state row before it is still there afterwards: no text of the record ran as SQL.
    states_before = {row["customer_id"] for row in await db.fetch("SELECT customer_id FROM customer_state")}
    await send(producer, SUSPENSION_COMMANDS.name, customer, command)
    [state] = await tail.wait_for(SUSPENSION_STATE.name, customer_id=customer)
    assert state["space_id"] == space and state["last_command_id"] == command["command_id"]
    row = await db.fetchrow("SELECT * FROM command_history WHERE customer_id = $1", customer)
    assert (row["note"], row["cause_topic"], row["cause_event_id"], row["actor"]) == (
        SQL, SQL, SQL, command["actor"])
    states_after = {row["customer_id"] for row in await db.fetch("SELECT customer_id FROM customer_state")}
    assert states_before < states_after and customer in states_after
    job = builders.invoice_job(customer, space, job_id=f"{uid('job')}{SQL}")
    await send(producer, INVOICE_JOBS.name, customer, job)
    [dropped] = await tail.wait_for("invoice.jobs.dropped", job_id=job["job_id"])
    assert dropped["customer_id"] == customer


async def _workers_still_apply(producer: AIOKafkaProducer, tail: TopicTail) -> None:
    customer = uid("cust")
    await send(producer, SUSPENSION_COMMANDS.name, customer, builders.command(customer, uid("space")))
    await tail.wait_for(SUSPENSION_STATE.name, customer_id=customer)


# --- issue 21: the contract refuses what PostgreSQL cannot store, and whatever gets through is isolated ------

ESC = "\\u001b"  # as JSON text: the escape that decodes to U+001B
CONTROL = "must not contain control characters"


def _raw(record: dict[str, object], **raw_fields: str) -> bytes:
    """The record as JSON, with some fields replaced by raw JSON text (numbers, escapes orjson would not write)."""
    text = orjson.dumps({k: v for k, v in record.items() if k not in raw_fields}).decode()
    extra = "".join(f', "{name}": {value}' for name, value in raw_fields.items())
    return (text[:-1] + extra + "}").encode()


def _command(key: str, **fields: object) -> bytes:
    return orjson.dumps(builders.command(key, "space-h") | fields)


def _job(key: str, **fields: object) -> bytes:
    return orjson.dumps(builders.invoice_job(key, "space-h") | fields)


# (case, topic, value for a customer key, the part of the dead letter's error that names the cause)
CORPUS: list[tuple[str, str, object, str]] = [
    *[(f"NUL in the command's {name}", SUSPENSION_COMMANDS.name,
       lambda key, name=name: _command(key, **{name: f"a{chr(0)}b"}), f"{name}: {CONTROL}")
      for name in ("command_id", "space_id", "note", "schedule_id")],
    ("NUL in the command's actor", SUSPENSION_COMMANDS.name, lambda key: _command(key, actor=f"admin:a{chr(0)}"),
     "actor: must be system, rule:<name> or admin:<id>"),
    ("NUL in the command's cause", SUSPENSION_COMMANDS.name,
     lambda key: _command(key, cause={"topic": "t", "event_id": f"e{chr(0)}"}), f"cause.event_id: {CONTROL}"),
    ("NUL in the command's customer_id", SUSPENSION_COMMANDS.name,
     lambda key: _command(key, customer_id=f"{key}{chr(0)}"), f"customer_id: {CONTROL}"),
    ("escape character in a note", SUSPENSION_COMMANDS.name,
     lambda key: _raw(builders.command(key, "space-h"), note=f'"red {ESC}[31m"'), f"note: {CONTROL}"),
    ("a control character in the space", SUSPENSION_COMMANDS.name,
     lambda key: _command(key, space_id=f"space{chr(1)}"), f"space_id: {CONTROL}"),
    ("a lone surrogate in a note", SUSPENSION_COMMANDS.name,
     lambda key: _raw(builders.command(key, "space-h"), note='"a\\ud800b"'),
     "Invalid JSON"),
    ("a 1 MiB note", SUSPENSION_COMMANDS.name, lambda key: _command(key, note="n" * (1024 * 1024)),
     "exceeds the limit"),
    ("a note just over its bound", SUSPENSION_COMMANDS.name, lambda key: _command(key, note="n" * 2001),
     "note: String should have at most 2000 characters"),
    ("year 0", SUSPENSION_COMMANDS.name, lambda key: _command(key, issued_at="0000-01-01T00:00:00Z"), "issued_at"),
    ("year 10000", SUSPENSION_COMMANDS.name, lambda key: _command(key, issued_at="10000-01-01T00:00:00Z"),
     "issued_at"),
    ("year 10000 once in UTC", SUSPENSION_COMMANDS.name,
     lambda key: _command(key, at="9999-12-31T23:00:00-05:00"), "at: must fall within the years 1 to 9999"),
    ("NUL in a signup's email", CUSTOMER_SIGNUPS.name,
     lambda key: orjson.dumps(builders.signup(key, "space-h") | {"email": f"a{chr(0)}@example.com"}),
     f"email: {CONTROL}"),
    ("a newline in a signup's email", CUSTOMER_SIGNUPS.name,
     lambda key: orjson.dumps(builders.signup(key, "space-h") | {"email": "a@example.com\nBcc: x"}),
     f"email: {CONTROL}"),
    ("NUL in a plan id", CUSTOMER_PLAN_CHANGES.name,
     lambda key: orjson.dumps(builders.plan_change(key, "space-h", f"gold{chr(0)}")), f"plan_id: {CONTROL}"),
    ("NUL in a CRM stage", CRM_OPPORTUNITIES.name,
     lambda key: orjson.dumps(builders.opportunity(key, "space-h", "board", f"won{chr(0)}")),
     f"stage_id: {CONTROL}"),
    ("NUL in an invoice's contract", INVOICE_JOBS.name, lambda key: _job(key, contract_id=f"c{chr(0)}"),
     f"contract_id: {CONTROL}"),
    ("NUL in a currency", INVOICE_JOBS.name, lambda key: _job(key, currency=f"EU{chr(0)}"), "currency"),
    ("amount 1e400", INVOICE_JOBS.name,
     lambda key: _raw({k: v for k, v in builders.invoice_job(key, "space-h").items() if k != "amount"},
                      amount="1e400"), "amount"),
    ("amount of 30 digits", INVOICE_JOBS.name, lambda key: _job(key, amount="1" * 30), "amount"),
    ("a period in year 10000", INVOICE_JOBS.name, lambda key: _job(key, period_end="10000-01-01"), "period_end"),
    # Kept as text, 600 KB of U+0001 would make a letter six times its cut (a \u0001 each): too large to publish.
    ("600 KB of control characters", SUSPENSION_COMMANDS.name, lambda key: b"\x01" * 600_000, "Invalid JSON"),
    ("600 KB of control characters as a signup", CUSTOMER_SIGNUPS.name, lambda key: b"\x01" * 600_000,
     "Invalid JSON"),
    ("600 KB of control characters as an invoice", INVOICE_JOBS.name, lambda key: b"\x01" * 600_000,
     "Invalid JSON"),
]


async def _follow_up(topic: str, key: str, producer: AIOKafkaProducer,
                     workers: WorkerProcess) -> tuple[dict[str, object], str, dict[str, object]]:
    """An ordinary record of the same topic and key (so the same partition) whose effect can be seen, and
    where: for plan changes and CRM events, a setting on first makes the event suspend its customer."""
    space = uid("space")
    if topic == INVOICE_JOBS.name:
        job = builders.invoice_job(key, space)
        return job, INVOICE_JOBS_ACCEPTED.name, {"job_id": job["job_id"]}
    if topic == SUSPENSION_COMMANDS.name:
        return builders.command(key, space), SUSPENSION_STATE.name, {"customer_id": key}
    if topic == CUSTOMER_PLAN_CHANGES.name:
        plan = uid("plan")
        await publish_setting(producer, workers, SETTINGS_PLANS.name, plan, builders.plan_setting(space, plan, True))
        return builders.plan_change(key, space, plan), SUSPENSION_STATE.name, {"customer_id": key}
    if topic == CRM_OPPORTUNITIES.name:
        board, stage = uid("board"), uid("stage")
        await publish_setting(producer, workers, SETTINGS_CRM_STAGES.name, f"{board}/{stage}",
                              builders.stage_setting(space, board, stage, True))
        return builders.opportunity(key, space, board, stage), SUSPENSION_STATE.name, {"customer_id": key}
    return builders.signup(key, space), SUSPENSION_STATE.name, {"customer_id": key}


@pytest.mark.parametrize(("case", "topic", "build", "error_part"), CORPUS, ids=[c[0] for c in CORPUS])
async def test_poison_record_then_the_next_record_of_its_partition(
    workers: WorkerProcess, big_producer: AIOKafkaProducer, tail: TopicTail, db: asyncpg.Pool,
    case: str, topic: str, build: object, error_part: str,
) -> None:
    key = uid("poison")
    assert callable(build)
    follow_record, effect_topic, effect = await _follow_up(topic, key, big_producer, workers)
    await send(big_producer, topic, key, build(key))
    await send(big_producer, topic, key, follow_record)

    [letter] = await tail.wait_for(DEADLETTER.name, timeout_s=60, key=key, source_topic=topic)
    assert error_part in letter["error"], letter["error"]
    [applied] = await tail.wait_for(effect_topic, timeout_s=60, **effect)
    if effect_topic == SUSPENSION_STATE.name:
        assert applied["version"] == 1  # applied once, and nothing of the poison record before it
        assert await db.fetchval("SELECT count(*) FROM command_history WHERE customer_id = $1", key) == 1
    else:
        assert await db.fetchval("SELECT count(*) FROM invoice_decisions WHERE customer_id = $1", key) == 1
    assert len(tail.matching(DEADLETTER.name, key=key)) == 1  # once, also now that its successor is through
    assert workers.running.poll() is None, "the worker process stopped"


SETTINGS_CORPUS = [
    ("an unknown time zone", SETTINGS_SPACES.name, {"time_zone": "Mars/Olympus_Mons"}, "time_zone"),
    ("a time zone with a NUL", SETTINGS_SPACES.name, {"time_zone": f"Europe/London{chr(0)}"}, CONTROL),
    ("a space id with a NUL", SETTINGS_SIGNUP.name, {"space_id": f"space{chr(0)}"}, CONTROL),
]


@pytest.mark.parametrize(("case", "topic", "change", "error_part"), SETTINGS_CORPUS,
                         ids=[c[0] for c in SETTINGS_CORPUS])
async def test_poison_setting_then_the_next_setting_of_its_key(
    workers: WorkerProcess, producer: AIOKafkaProducer, tail: TopicTail, case: str, topic: str,
    change: dict[str, object], error_part: str,
) -> None:
    space = uid("space")
    good = ({"space_id": space, "time_zone": "Europe/Lisbon", "updated_at": now_iso()} if topic == SETTINGS_SPACES.name
            else builders.signup_setting(space, True))
    await publish_setting(producer, workers, topic, space, good | change)
    await publish_setting(producer, workers, topic, space, good)  # folded after the poison, by the same worker
    [letter] = await tail.wait_for(DEADLETTER.name, key=space, source_topic=topic)
    assert error_part in letter["error"], letter["error"]
    if topic == SETTINGS_SIGNUP.name:  # the good setting is in force: a signup of the space is suspended
        customer = uid("cust")
        await send(producer, CUSTOMER_SIGNUPS.name, customer, builders.signup(customer, space))
        [state] = await tail.wait_for(SUSPENSION_STATE.name, customer_id=customer)
        assert state["suspended"] is True
    assert workers.running.poll() is None, "the worker process stopped"


async def test_tab_and_newlines_in_a_note_are_kept(workers: WorkerProcess, producer: AIOKafkaProducer,
                                                   tail: TopicTail, db: asyncpg.Pool) -> None:
    customer = uid("cust")
    note = "first line\r\nsecond\tcolumn"
    await send(producer, SUSPENSION_COMMANDS.name, customer, builders.command(customer, uid("space"), note=note))
    await tail.wait_for(SUSPENSION_STATE.name, customer_id=customer)
    assert await db.fetchval("SELECT note FROM command_history WHERE customer_id = $1", customer) == note


async def test_a_key_that_differs_only_by_a_nul(workers: WorkerProcess, producer: AIOKafkaProducer,
                                                tail: TopicTail, db: asyncpg.Pool) -> None:
    customer = uid("cust")
    command = builders.command(customer, uid("space"))
    await send(producer, SUSPENSION_COMMANDS.name, f"{customer}\x00".encode(), command)
    await send(producer, SUSPENSION_COMMANDS.name, customer, builders.command(customer, command["space_id"]))
    [state] = await tail.wait_for(SUSPENSION_STATE.name, customer_id=customer)
    [letter] = await tail.wait_for(DEADLETTER.name, value=orjson.dumps(command).decode())
    assert "does not match customer_id" in letter["error"] and letter["key"] == f"{customer}\x00"
    assert state["version"] == 1 and state["last_command_id"] != command["command_id"]
    assert await db.fetchval("SELECT count(*) FROM command_history WHERE customer_id = $1", customer) == 1
