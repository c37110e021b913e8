"""Issue 5: lag figures and statuses, /metrics after real traffic, /readyz through a database outage."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from collections import Counter
from pathlib import Path

import asyncpg
import orjson
import pytest
from aiokafka import AIOKafkaProducer
from prometheus_client.parser import text_string_to_metric_families

from suspensions.lag import GroupReport, Status, measure
from suspensions.local.postgres import LocalPostgres
from tests.integration import builders
from tests.support import TopicTail, WorkerProcess, run_cli, send, uid, wait_until
from topics import INVOICE_JOBS, INVOICE_JOBS_ACCEPTED, INVOICE_JOBS_DROPPED, SUSPENSION_COMMANDS, SUSPENSION_STATE
from workers.runtime.config import Settings

pytestmark = pytest.mark.integration


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


async def test_lag_is_exact_then_drains_to_zero(isolated: Settings, tmp_path: Path) -> None:
    group = uid("billing-lag")
    local = isolated.model_copy(update={"billing_group": group})
    env = {"SUSPENSIONS_BILLING_GROUP": group}
    producer = AIOKafkaProducer(bootstrap_servers=local.kafka_bootstrap_servers, linger_ms=5)
    await producer.start()
    tail = await TopicTail(local, (INVOICE_JOBS_ACCEPTED.name,)).start()
    worker = WorkerProcess(local, ("billing",), env, tmp_path / "billing-1.log").start()
    try:
        await worker.wait_ready()
        space = uid("space")
        warmup = [builders.invoice_job(uid("cust"), space) for _ in range(10)]
        for job in warmup:
            await send(producer, INVOICE_JOBS.name, job["customer_id"], job)
        await tail.wait_for(INVOICE_JOBS_ACCEPTED.name, count=10, space_id=space)
        [caught_up] = await wait_until(
            lambda: _measured_ok(local, group), timeout_s=30, what="lag zero after warm-up")
        assert caught_up.total_lag == 0

        assert worker.stop() == 0
        per_partition: Counter[int] = Counter()
        backlog = [builders.invoice_job(uid("cust"), space) for _ in range(57)]
        for job in backlog:
            metadata = await producer.send_and_wait(INVOICE_JOBS.name, orjson.dumps(job),
                                                    key=job["customer_id"].encode())
            per_partition[metadata.partition] += 1
        [report] = await measure(local, {group: (INVOICE_JOBS.name,)}, window_s=1.0, samples=2)
        assert report.total_lag == 57
        assert {p["partition"]: p["lag"] for p in report.partitions if p["lag"]} == dict(per_partition)
        assert all(p["time_lag_s"] > 0 for p in report.partitions if p["lag"])
        # Nobody commits while records wait: STOP, or STALL while the broker still lists the gone member.
        assert report.status in (Status.STOP, Status.STALL)

        cli = run_cli(local, "lag", "--group", group, "--window", "0", "--json")
        assert cli.returncode == 1, cli.stderr
        [as_json] = json.loads(cli.stdout)
        assert as_json["total_lag"] == 57 and as_json["status"] != "OK"

        worker = WorkerProcess(local, ("billing",), env, tmp_path / "billing-2.log").start()
        await tail.wait_for(INVOICE_JOBS_ACCEPTED.name, count=67, space_id=space, timeout_s=90)
        await wait_until(lambda: _measured_ok(local, group), timeout_s=30, what="lag drained to zero")
        cli = run_cli(local, "lag", "--group", group, "--window", "0", "--json")
        assert cli.returncode == 0 and json.loads(cli.stdout)[0]["status"] == "OK"
    finally:
        worker.stop()
        await tail.stop()
        await producer.stop()


async def _measured_ok(settings: Settings, group: str) -> list[GroupReport] | None:
    reports = await measure(settings, {group: (INVOICE_JOBS.name,)}, window_s=0, samples=1)
    return reports if reports[0].status is Status.OK and reports[0].total_lag == 0 else None


async def test_metrics_after_real_traffic(settings: Settings, workers: WorkerProcess, producer: AIOKafkaProducer,
                                          tail: TopicTail) -> None:
    space, customer = uid("space"), uid("cust")
    # The session's workers served earlier tests: every check is on the change this test's traffic causes.
    counted = {
        "applied": ("suspensions_commands_applied_total", {"action": "suspend", "reason": "manual"}),
        "dropped": ("suspensions_invoice_jobs_total", {"decision": "dropped"}),
        "dead": ("suspensions_dead_letters_total", {"topic": "suspension.commands"}),
        "consumed": ("suspensions_records_consumed_total", {"worker": "state"}),
        "batches": ("suspensions_batch_processing_seconds_count", {"worker": "state"}),
        "latencies": ("suspensions_end_to_end_latency_seconds_count", {}),
    }

    async def read() -> dict[str, float]:
        return {key: await asyncio.to_thread(workers.metric, name, **labels)
                for key, (name, labels) in counted.items()}

    before = await read()
    await send(producer, SUSPENSION_COMMANDS.name, customer, builders.command(customer, space))
    await send(producer, SUSPENSION_COMMANDS.name, customer, b"not json")
    await tail.wait_for(SUSPENSION_STATE.name, customer_id=customer)
    job = builders.invoice_job(customer, space)
    await send(producer, INVOICE_JOBS.name, customer, job)
    await tail.wait_for(INVOICE_JOBS_DROPPED.name, job_id=job["job_id"])

    # What this traffic adds, as docs/operations.md defines each metric: one suspend applied, one job
    # dropped, one dead letter, two records consumed by the state worker (the command and the bad record),
    # one state record published (one latency observed); one or two batches, as the two records were fetched.
    expected = {"applied": 1, "dropped": 1, "dead": 1, "consumed": 2, "latencies": 1}

    async def moved() -> dict[str, float]:
        after = await read()
        return {key: after[key] - before[key] for key in counted}

    async def grown() -> dict[str, float] | None:
        delta = await moved()
        return delta if all(delta[key] >= expected.get(key, 1) for key in counted) else None

    try:
        await wait_until(grown, timeout_s=30, what="every counter moved by this test's traffic")
    except AssertionError:
        raise AssertionError(f"counters before {before}, after {await read()}") from None
    # The lag gauge is sampled by the worker itself; it has a series for the state group's partitions.
    async def lag_sampled() -> bool:
        _, text = await asyncio.to_thread(_get, workers.http_port, "/metrics")
        return any(sample.labels.get("group") == settings.state_group
                   for family in text_string_to_metric_families(text) if family.name == "suspensions_consumer_lag_records"
                   for sample in family.samples)

    await wait_until(lag_sampled, 30, "a lag sample of the state group")
    # Read again after the wait for the lag sample: what the traffic caused, exactly, not merely at least.
    delta = await moved()
    assert {key: delta[key] for key in expected} == expected, delta
    assert 1 <= delta["batches"] <= delta["consumed"], delta
    _, body = await asyncio.to_thread(_get, workers.http_port, "/metrics")
    assert customer not in body and space not in body  # no high-cardinality labels
    status, health = _get(workers.http_port, "/healthz")
    assert status == 200 and json.loads(health)["alive"] is True


async def test_readyz_follows_a_database_outage(own_postgres: tuple[Settings, LocalPostgres],
                                               tmp_path: Path) -> None:
    local, postgres = own_postgres
    worker = WorkerProcess(local, ("state",), {}, tmp_path / "state.log").start()
    try:
        await worker.wait_ready()
        await asyncio.to_thread(postgres.stop, keep_data=True)
        status, body = await wait_until(
            lambda: _not_ready(worker.http_port), timeout_s=30, what="not ready while PostgreSQL is down")
        assert "PostgreSQL unreachable" in body

        # Commands sent during the outage are applied once it is back.
        producer = AIOKafkaProducer(bootstrap_servers=local.kafka_bootstrap_servers)
        await producer.start()
        space, customer = uid("space"), uid("cust")
        await send(producer, SUSPENSION_COMMANDS.name, customer, builders.command(customer, space))
        await producer.stop()
        await asyncio.to_thread(postgres.restart_after_stop)
        await worker.wait_ready(timeout_s=60)
        conn = await asyncpg.connect(postgres.url)
        try:
            await wait_until(lambda: conn.fetchval(
                "SELECT suspended FROM customer_state WHERE customer_id = $1", customer),
                timeout_s=60, what="the command applied after the outage")
        finally:
            await conn.close()
    finally:
        assert worker.stop() == 0


async def _not_ready(port: int) -> tuple[int, str] | None:
    status, body = await asyncio.to_thread(_get, port, "/readyz")
    return (status, body) if status == 503 else None
