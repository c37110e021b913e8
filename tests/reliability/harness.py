"""Load, oracle and checks shared by the fault-injection tests."""

from __future__ import annotations

import asyncio
import os
import random
import signal
from collections import defaultdict
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from models import SuspensionCommand, decode, event_id_for
from tests.integration import builders
from tests.support import uid, wait_until
from topics import SUSPENSION_COMMANDS
from workers.runtime.config import Settings
from workers.state.transitions import CustomerState, plan_batch


def command_stream(customers: Sequence[str], space: str, count: int, seed: int = 7) -> list[dict[str, Any]]:
    """Random suspends and lifts over the customers, with about 5% of commands re-sent (same id)."""
    rng = random.Random(seed)
    stream: list[dict[str, Any]] = []
    for _ in range(count):
        if stream and rng.random() < 0.05:
            stream.append(rng.choice(stream))
            continue
        action = rng.choice(["suspend", "suspend", "lift"])
        reason = rng.choice(["signup", "plan", "crm_stage", "manual"]) if action == "suspend" else "manual"
        stream.append(builders.command(rng.choice(customers), space, action=action, reason=reason))
    return stream


def oracle(stream: Sequence[dict[str, Any]]) -> dict[str, CustomerState]:
    """The expected final states: the pure rules folded over each customer's commands in order."""
    commands = [(i, decode(SuspensionCommand, orjson.dumps(c))) for i, c in enumerate(stream)]
    return plan_batch({}, set(), commands, datetime.now(UTC)).final_states


async def produce(settings: Settings, topic: str, records: Sequence[dict[str, Any]], key_field: str = "customer_id",
                  pace_every: int = 0, pause_s: float = 0.0) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, linger_ms=10,
                                max_batch_size=256 * 1024)
    await producer.start()
    try:
        pending = []
        for index, record in enumerate(records, 1):
            pending.append(await producer.send(topic, orjson.dumps(record), key=record[key_field].encode()))
            if pace_every and index % pace_every == 0:
                await asyncio.gather(*pending)
                pending.clear()
                await asyncio.sleep(pause_s)
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


async def count(db_url: str, sql: str, *args: Any) -> int:
    """A count from the database; a database error is raised, never turned into a number."""
    conn = await asyncpg.connect(db_url)
    try:
        return int(await conn.fetchval(sql, *args))
    finally:
        await conn.close()


async def wait_for_count(db_url: str, sql: str, at_least: int, timeout_s: float, what: str) -> None:
    async def reached() -> bool:
        try:
            return await count(db_url, sql) >= at_least
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            return False  # the database is down or restarting: not reached yet

    await wait_until(reached, timeout_s, what)


async def wait_until_decided(db_url: str, commands: int, jobs: int = 0, timeout_s: float = 240) -> None:
    """``commands`` command ids applied and ``jobs`` invoice jobs decided, then the outbox empty: every
    decision made and published."""
    await wait_for_count(db_url, "SELECT count(*) FROM processed_commands", commands, timeout_s,
                         "every command applied")
    if jobs:
        await wait_for_count(db_url, "SELECT count(*) FROM invoice_decisions", jobs, timeout_s, "every job decided")
    await wait_for_count(db_url, "SELECT CASE WHEN count(*) = 0 THEN 1 ELSE 0 END FROM outbox", 1, 60,
                         "the outbox drained")


def distinct_commands(stream: Sequence[dict[str, Any]]) -> int:
    return len({c["command_id"] for c in stream})


def _json(value: bytes | None) -> Any:
    """A record's value as JSON, or None for one that is not (the hostile-input tests put such on topics)."""
    try:
        return orjson.loads(value) if value is not None else None
    except orjson.JSONDecodeError:
        return None


async def read_topic(settings: Settings, topic: str) -> list[tuple[bytes | None, dict[str, Any]]]:
    """Every JSON record of a topic, from the beginning to its current end (fetch high watermark)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers, group_id=None,
                                enable_auto_commit=False, auto_offset_reset="earliest",
                                fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms)
    await consumer.start()
    try:
        from aiokafka import TopicPartition

        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        if not partitions:
            await consumer.topics()
            partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        records: list[tuple[bytes | None, dict[str, Any]]] = []
        while True:
            batches = await consumer.getmany(timeout_ms=200, max_records=10_000)
            for batch in batches.values():
                records.extend((r.key, value) for r in batch if (value := _json(r.value)) is not None)
            done = True
            for tp in partitions:
                highwater = consumer.highwater(tp)
                if highwater is None or await consumer.position(tp) < highwater:
                    done = False
            if done and not batches:
                return records
    finally:
        await consumer.stop()


async def assert_state_matches_oracle(settings: Settings, stream: Sequence[dict[str, Any]],
                                     allowed_repeats: int = 0) -> None:
    expected = oracle(stream)
    distinct_ids = {c["command_id"] for c in stream}
    conn = await asyncpg.connect(settings.database_url)
    try:
        rows = {r["customer_id"]: r for r in await conn.fetch("SELECT * FROM customer_state")}
        history = await conn.fetch("SELECT customer_id, command_id, outcome FROM command_history")
        outbox = await conn.fetchval("SELECT count(*) FROM outbox")
    finally:
        await conn.close()
    assert set(rows) == set(expected)
    for customer, state in expected.items():
        row = rows[customer]
        assert (row["suspended"], tuple(row["reasons"]), row["version"], row["last_command_id"]) == (
            state.suspended, tuple(state.reasons), state.version, state.last_command_id), customer
    # One history row per effective command, none doubled.
    assert len(history) == len({h["command_id"] for h in history})
    assert {h["command_id"] for h in history} <= distinct_ids
    changed: dict[str, int] = defaultdict(int)
    for h in history:
        if h["outcome"] == "changed":
            changed[h["customer_id"]] += 1
    assert {c: changed[c] for c in expected} == {c: s.version for c, s in expected.items()}
    assert outbox == 0

    # The state topic: every version of every customer, each once (or repeated identically after a crash).
    stream_customers = {c["customer_id"] for c in stream}  # other tests' customers may share the topic
    states = [record for _, record in await read_topic(settings, "suspension.state")
              if record["customer_id"] in stream_customers]
    assert_each_published_once(
        states, lambda record: f"{record['customer_id']}:{record['version']}",
        {f"{customer}:{version}" for customer, state in expected.items() for version in range(1, state.version + 1)},
        allowed_repeats)
    # The lifecycle events: one per change, each once (a repeat carries the same event_id and content).
    events = [record for _, record in await read_topic(settings, "suspension.events")
              if record["customer_id"] in stream_customers]
    assert_each_published_once(
        events, lambda record: record["event_id"],
        {event_id_for(customer, version) for customer, state in expected.items()
         for version in range(1, state.version + 1)},
        allowed_repeats)
    assert all(record["event_id"] == event_id_for(record["customer_id"], record["version"]) for record in events)


def assert_each_published_once(records: Sequence[dict[str, Any]], identity: Callable[[dict[str, Any]], str],
                               expected: set[str], allowed_repeats: int) -> None:
    """Every expected record is on the topic and nothing else is. The contract publishes at least once:
    a record may appear again only as an identical copy (its outbox row re-published after a crash), and
    at most ``allowed_repeats`` extra copies may, counted as copies (a record published 50 times is 49
    repeats, not one; 0 where no process crashed)."""
    copies: dict[str, list[bytes]] = defaultdict(list)
    for record in records:
        copies[identity(record)].append(orjson.dumps(record, option=orjson.OPT_SORT_KEYS))
    assert set(copies) == expected, (len(set(copies) - expected), len(expected - set(copies)))
    repeated = {key: contents for key, contents in copies.items() if len(contents) > 1}
    assert all(len(set(contents)) == 1 for contents in repeated.values()), "a repeated record differs"
    extra_copies = sum(len(contents) - 1 for contents in repeated.values())
    assert extra_copies <= allowed_repeats, f"{extra_copies} extra copies of {len(repeated)} records"


def customers(count_: int) -> list[str]:
    return [uid("c") for _ in range(count_)]


async def stop_between_publishing_and_marking(
    settings: Settings, worker: Any, watcher: Any, fired: Callable[[dict[str, Any]], str | None], unmarked_sql: str,
) -> set[str]:
    """SIGSTOP ``worker`` as soon as ``watcher`` (a consumer of `suspension.commands`) fetches a command it
    fired that was not seen before (``fired`` gives its key, or None for other commands); return the keys
    whose command is on the topic yet still unmarked in the database (``unmarked_sql``: those keys). When
    there are none (it marked them before it stopped), it runs on (SIGCONT) until the next one."""
    seen: set[str] = set()

    async def stopped_at_a_new_one() -> bool:
        batches = await watcher.getmany(timeout_ms=1_000)  # returns as soon as records come
        new = {key for records in batches.values() for record in records
               if (key := fired(orjson.loads(record.value))) is not None} - seen
        if new:
            os.kill(worker.running.pid, signal.SIGSTOP)
            seen.update(new)
        return bool(new)

    while True:
        await wait_until(stopped_at_a_new_one, 30, "a fired command on the topic")
        published = {key for _, command in await read_topic(settings, SUSPENSION_COMMANDS.name)
                     if (key := fired(command)) is not None}
        conn = await asyncpg.connect(settings.database_url)
        try:
            unmarked = {row[0] for row in await conn.fetch(unmarked_sql)}
        finally:
            await conn.close()
        if published & unmarked or not unmarked:
            return published & unmarked
        os.kill(worker.running.pid, signal.SIGCONT)
