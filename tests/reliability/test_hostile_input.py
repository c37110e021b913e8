"""Issue 7: hostile input goes to deadletter with a clear error, changes nothing, and the workers stay up."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import orjson
import pytest
from aiokafka import AIOKafkaProducer

from tests.integration import builders
from tests.support import TopicTail, WorkerProcess, send, uid
from topics import CUSTOMER_SIGNUPS, DEADLETTER, INVOICE_JOBS, SUSPENSION_COMMANDS, SUSPENSION_STATE
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
    await send(producer, SUSPENSION_COMMANDS.name, customer, command)
    [state] = await tail.wait_for(SUSPENSION_STATE.name, customer_id=customer)
    assert state["space_id"] == space and state["last_command_id"] == command["command_id"]
    row = await db.fetchrow("SELECT * FROM command_history WHERE customer_id = $1", customer)
    assert (row["note"], row["cause_topic"], row["cause_event_id"], row["actor"]) == (
        SQL, SQL, SQL, command["actor"])
    assert await db.fetchval("SELECT count(*) FROM customer_state") > 0  # the table is still there
    job = builders.invoice_job(customer, space, job_id=f"{uid('job')}{SQL}")
    await send(producer, INVOICE_JOBS.name, customer, job)
    [dropped] = await tail.wait_for("invoice.jobs.dropped", job_id=job["job_id"])
    assert dropped["customer_id"] == customer


async def _workers_still_apply(producer: AIOKafkaProducer, tail: TopicTail) -> None:
    customer = uid("cust")
    await send(producer, SUSPENSION_COMMANDS.name, customer, builders.command(customer, uid("space")))
    await tail.wait_for(SUSPENSION_STATE.name, customer_id=customer)
