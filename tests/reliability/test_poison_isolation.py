"""Issue 21: a record the contract accepts but PostgreSQL (or the broker) refuses is isolated, never fatal.

The constraints added here are ones the contract does not know, so the records pass decoding and fail
inside the worker's transaction, as a record would that the contract's checks missed. Every other record
of the batch must be applied exactly once, each refused record dead-lettered once with the database's
reason, and the worker process must go on.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import asyncpg
import orjson
import pytest
from aiokafka import AIOKafkaProducer

from tests.integration import builders
from tests.reliability.harness import count, produce, read_topic, wait_for_count
from tests.support import WorkerProcess, send, uid, wait_until
from topics import DEADLETTER, INVOICE_JOBS, INVOICE_JOBS_ACCEPTED, SUSPENSION_COMMANDS, SUSPENSION_STATE
from workers.runtime.config import Settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]


async def _refuse(settings: Settings, sql: str) -> None:
    conn = await asyncpg.connect(settings.database_url)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def test_state_worker_dead_letters_what_postgresql_refuses(isolated: Settings, tmp_path: Path) -> None:
    # A check violation (class 23) for notes "poison...", a data exception (class 22: 'cast' + text is no
    # integer) for notes "cast...".
    await _refuse(isolated, "ALTER TABLE command_history ADD CONSTRAINT test_refused_notes CHECK "
                            "(note IS NULL OR (note NOT LIKE 'poison%' AND (note NOT LIKE 'cast%' "
                            "OR substr(note, 5)::int > 0)))")
    space = uid("space")
    stream = [builders.command(uid("c"), space, note="ok") for _ in range(2_000)]
    poisoned = {120: "poison-a", 1_000: "cast-abc", 1_999: "poison-b"}
    for position, note in poisoned.items():
        stream[position]["note"] = note
    # The same customers again, after the poison, on the same partitions: they must be applied.
    follow_ups = [builders.command(stream[position]["customer_id"], space, note="ok") for position in poisoned]
    await produce(isolated, SUSPENSION_COMMANDS.name, stream + follow_ups)  # all there before the worker reads
    # And one the contract refuses, in the same batch: the failed attempts that contained it must not log or
    # count its dead letter again (only the published letter is).
    undecodable = uid("c")
    await produce(isolated, SUSPENSION_COMMANDS.name, [builders.command(undecodable, space, action="ban")])

    worker = WorkerProcess(isolated, ("state",), log_path=tmp_path / "state.log").start()
    try:
        await worker.wait_ready()
        await wait_for_count(isolated.database_url, "SELECT count(*) FROM command_history", 2_000, 120,
                             "every command but the refused ones applied")
        letters = await wait_until(lambda: _letters(isolated, 4), 30, "four dead letters")
        assert worker.running.poll() is None, "the state worker stopped"
        assert worker.metric("suspensions_poison_records_total", worker="state") == 3
        assert worker.metric("suspensions_dead_letters_total", topic=SUSPENSION_COMMANDS.name) == 4
    finally:
        worker.stop()
    logged = [line for line in (tmp_path / "state.log").read_text().splitlines() if '"dead letter"' in line]
    assert len(logged) == 4, logged  # once per record, with where it is
    assert all('"partition"' in line and '"offset"' in line for line in logged)
    assert not any("poison-a" in line or "cast-abc" in line for line in logged)  # the values stay in the letter
    letters = [letter for letter in letters if orjson.loads(letter["value"])["customer_id"] != undecodable]

    refused = {stream[position]["command_id"] for position in poisoned}
    assert {orjson.loads(letter["value"])["command_id"] for letter in letters} == refused
    errors = sorted(letter["error"] for letter in letters)
    assert errors[0].startswith("refused while being applied: CheckViolationError (23514)"), errors
    assert errors[2].startswith("refused while being applied: InvalidTextRepresentationError (22P02)"), errors
    # Exactly once: one history row per applied command, none for a refused one, one state record each.
    assert await count(isolated.database_url, "SELECT count(DISTINCT command_id) FROM command_history") == 2_000
    assert await count(isolated.database_url, "SELECT count(*) FROM command_history "
                                              "WHERE command_id = ANY($1::text[])", list(refused)) == 0
    states = Counter(value["customer_id"] for _, value in await read_topic(isolated, SUSPENSION_STATE.name))
    assert len(states) == 2_000 and set(states.values()) == {1}


async def test_billing_dead_letters_what_postgresql_or_the_broker_refuses(isolated: Settings,
                                                                          tmp_path: Path) -> None:
    await _refuse(isolated, "ALTER TABLE invoice_decisions ADD CONSTRAINT test_refused_contracts CHECK "
                            "(contract_id NOT LIKE 'poison%')")
    space = uid("space")
    jobs = [builders.invoice_job(uid("c"), space) for _ in range(300)]
    jobs[40]["contract_id"] = "poison-1"
    # Under the 1 MiB input limit, but its accepted record would be over the 1,000,000 bytes publishable.
    jobs[41]["padding"] = "p" * 1_040_000
    refused = {jobs[40]["job_id"], jobs[41]["job_id"]}
    big = AIOKafkaProducer(bootstrap_servers=isolated.kafka_bootstrap_servers, max_request_size=4 * 1024 * 1024)
    await big.start()
    try:
        for job in jobs:  # one producer, one partition order per customer key
            await send(big, INVOICE_JOBS.name, job["customer_id"], job)
    finally:
        await big.stop()

    worker = WorkerProcess(isolated, ("billing",), log_path=tmp_path / "billing.log").start()
    try:
        await worker.wait_ready()
        await wait_for_count(isolated.database_url, "SELECT count(*) FROM invoice_decisions", 298, 120,
                             "every job but the refused ones decided")
        letters = await wait_until(lambda: _letters(isolated, 2), 30, "two dead letters")
        assert worker.running.poll() is None, "the billing worker stopped"
    finally:
        worker.stop()

    by_error = {letter["error"].split(":")[1].strip(): letter for letter in letters}
    assert set(by_error) == {"CheckViolationError (23514)", "RecordTooLarge"}, by_error
    assert "SUSPENSIONS_KAFKA_MAX_RECORD_BYTES" in by_error["RecordTooLarge"]["error"]
    assert by_error["RecordTooLarge"]["original_size"] > 1_000_000  # the letter holds the cut record
    accepted = Counter(value["job_id"] for _, value in await read_topic(isolated, INVOICE_JOBS_ACCEPTED.name))
    assert set(accepted) == {job["job_id"] for job in jobs} - refused and set(accepted.values()) == {1}


async def _letters(settings: Settings, expected: int) -> list[dict[str, object]] | None:
    letters = [value for _, value in await read_topic(settings, DEADLETTER.name)]
    assert len(letters) <= expected, letters  # never a second letter for the same record
    return letters if len(letters) == expected else None
