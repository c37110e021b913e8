"""What operators wait on: the bulk CLI, the API, and schedules due at the same moment."""

from __future__ import annotations

import asyncio
import random
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import httpx
import orjson
from aiokafka.partitioner import DefaultPartitioner

from bench.figures import Figure, percentiles
from bench.plumbing import bench_worker, fresh_topics, skip_backlog
from models import Action, CustomerState, Reason, ScheduledEntry
from suspensions import access
from suspensions.local.ports import free_port
from suspensions.local.processes import service_env
from suspensions.local.seed import copy_states
from topics import SUSPENSION_COMMANDS
from workers.runtime.config import Settings


async def bulk_case(settings: Settings, lines: int) -> Figure:
    worker = bench_worker(settings, "state")
    try:
        await worker.wait_ready(120)
        path = Path(tempfile.mkstemp(suffix=".csv")[1])
        space = f"bulk-{uuid.uuid4().hex[:6]}"
        path.write_text("customer_id,space_id,note\n" + "".join(f"{space}-{i},{space},bench\n" for i in range(lines)))
        env = service_env(settings)
        started = time.perf_counter()
        result = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-m", "suspensions", "bulk", "suspend", "--file", str(path), "--json"],
            env=env, capture_output=True, text=True, timeout=300)
        seconds = time.perf_counter() - started
        summary = orjson.loads(result.stdout) if result.returncode == 0 else {}
        figure = Figure("bulk CLI (published and confirmed)", lines, lines / seconds, seconds=seconds,
                        target="10,000 lines < 5 s", met=summary.get("applied") == lines and seconds < 5 * lines / 10_000)
        figure.notes.append(f"applied {summary.get('applied')} of {lines}; includes the CLI's start-up")
        if result.returncode != 0:
            figure.notes.append(f"bulk exited {result.returncode}: {result.stderr[-500:]} {result.stdout[-300:]}")
    finally:
        worker.stop()
    return figure


async def schedules_case(settings: Settings, count: int, state_rate: float | None) -> Figure:
    """``count`` schedules due in the same minute, fired by a state worker: how long after the moment the
    last one was applied, and the firing rate as a ratio of the state worker's own throughput."""
    space = f"sched-{uuid.uuid4().hex[:6]}"
    due = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=20 + count / 20_000)
    partitioner = DefaultPartitioner()
    partitions = list(range(settings.topic_partitions))
    states, rows = [], []
    for i in range(count):
        customer, schedule_id = f"{space}-{i}", f"{space}-s{i}"
        entry = ScheduledEntry(schedule_id, Action.SUSPEND, due, None, "admin:bench", None)
        states.append(CustomerState(customer, space, False, (), None, None, 1, datetime.now(UTC), "seed", (entry,)))
        partition = partitioner(customer.encode(), partitions, partitions)
        rows.append((schedule_id, customer, space, "suspend", due, None, "admin:bench", None, partition, "pending",
                     "seed", datetime.now(UTC)))
    conn = await asyncpg.connect(settings.database_url)
    try:
        await copy_states(conn, states)
        await conn.copy_records_to_table("schedules", records=rows, columns=[
            "schedule_id", "customer_id", "space_id", "action", "at", "missed_invoices", "actor", "note",
            "source_partition", "status", "updated_by_command", "updated_at"])
    finally:
        await conn.close()
    await skip_backlog(settings, settings.state_group, SUSPENSION_COMMANDS.name)
    worker = bench_worker(settings, "state")
    try:
        await worker.wait_ready(120)
        conn = await asyncpg.connect(settings.database_url)
        try:
            deadline = time.monotonic() + 600
            while await conn.fetchval("SELECT count(*) FROM schedules WHERE space_id = $1 AND status = 'fired'",
                                      space) < count:
                if time.monotonic() > deadline:
                    raise TimeoutError("not every schedule fired within 600 s")
                await asyncio.sleep(0.2)
            first, last, fires = await conn.fetchrow(
                "SELECT min(applied_at), max(applied_at), count(*) FROM command_history "
                "WHERE space_id = $1 AND fired_delay_ms IS NOT NULL", space)
            once = await conn.fetchval("SELECT count(DISTINCT customer_id) FROM command_history "
                                       "WHERE space_id = $1 AND fired_delay_ms IS NOT NULL", space)
        finally:
            await conn.close()
    finally:
        worker.stop()
    seconds = max((last - first).total_seconds(), 0.001)
    late_s = (last - due).total_seconds()
    figure = Figure(f"schedules: {count:,} due in the same minute", count, count / seconds, "state worker",
                    state_rate, seconds=late_s, target="each fires once",
                    met=fires == count == once)
    figure.notes.append(f"the last applied {late_s:.1f} s after the moment; {fires} fires for {once} customers")
    return figure


async def _paced_requests(client: httpx.AsyncClient, make: Callable[[int], Awaitable[httpx.Response]], rate: int,
                          count: int) -> list[float]:
    """``count`` requests at ``rate`` per second (each its own task, so a slow one does not slow the pace);
    returns the latency of each, in seconds."""
    latencies: list[float] = []

    async def one(i: int) -> None:
        started = time.perf_counter()
        response = await make(i)
        if response.status_code >= 400:
            raise RuntimeError(f"{response.status_code}: {response.text[:300]}")
        latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    tasks = []
    for i in range(count):
        delay = started + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i)))
    await asyncio.gather(*tasks)
    return latencies


async def api_case(settings: Settings, rate: int, seconds: float, space_size: int) -> list[Figure]:
    """The operator API: POST suspend (no wait) of a known customer (the API looks it up, then sends) at a
    sustained rate against a bare endpoint of the same framework that does one Kafka send; and a page of
    100 customers from a space of ``space_size``."""
    space = f"api-{uuid.uuid4().hex[:6]}"
    conn = await asyncpg.connect(settings.database_url)
    try:
        token = await access.create_token(conn, f"bench-{space}", access.Role.OPERATOR, [space])
        now = datetime.now(UTC)
        await copy_states(conn, [CustomerState(f"{space}-{i:07d}", space, i % 5 == 0, (Reason.MANUAL,)
                                                          if i % 5 == 0 else (), now, None, 1, now, "seed")
                                            for i in range(space_size)])
    finally:
        await conn.close()
    await fresh_topics(settings, "bench.bare.api")
    api = bench_worker(settings, "api")
    port = free_port()
    bare = subprocess.Popen([sys.executable, "-m", "uvicorn", "bench.bare_api:app", "--port", str(port),
                             "--log-level", "warning"], env=service_env(settings))
    count = int(rate * seconds)
    headers = {"Authorization": f"Bearer {token}"}
    try:
        async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=50)) as client:
            for url in (f"http://127.0.0.1:{api.api_port}/healthz", f"http://127.0.0.1:{port}/docs"):
                deadline = time.monotonic() + 60
                while True:
                    try:
                        if (await client.get(url)).status_code < 500:
                            break
                    except httpx.TransportError:
                        pass
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"{url} did not answer")
                    await asyncio.sleep(0.1)
            base = f"http://127.0.0.1:{api.api_port}/api/v1/spaces/{space}"

            def known(i: int) -> str:  # the API acts only on customers it knows in the space (issue 21)
                return f"{space}-{i % space_size:07d}"

            # Warm both (connections, first imports), then measure each at the same offered rate.
            await _paced_requests(client, lambda i: client.post(f"{base}/customers/{known(i)}/suspend",
                                                                headers=headers, json={}), rate, min(count, rate))
            await _paced_requests(client, lambda i: client.post(f"http://127.0.0.1:{port}/send/warm-{i}"), rate,
                                  min(count, rate))
            ours = await _paced_requests(client, lambda i: client.post(f"{base}/customers/{known(rate + i)}/suspend",
                                                                       headers=headers, json={"note": "bench"}),
                                         rate, count)
            theirs = await _paced_requests(client, lambda i: client.post(f"http://127.0.0.1:{port}/send/k-{i}"),
                                           rate, count)
            cursors = [f"{space}-{random.Random(i).randrange(space_size):07d}" for i in range(200)]
            pages = await _paced_requests(client, lambda i: client.get(f"{base}/customers", headers=headers,
                                                                       params={"limit": 100, "cursor": cursors[i]}),
                                          50, len(cursors))
    finally:
        api.stop()
        bare.terminate()
        bare.wait(30)
    p50, p99 = percentiles(ours)
    bare_p50, bare_p99 = percentiles(theirs)
    post = Figure("api: POST suspend (no wait)", count, p50_ms=p50, p99_ms=p99, baseline="bare endpoint, one send",
                  target="p50 and p99 within 2x of the bare endpoint's",
                  met=p50 <= 2 * bare_p50 and p99 <= 2 * bare_p99, seconds=seconds)
    post.notes.append(f"{rate} requests/s; bare endpoint p50 {bare_p50:.1f} ms, p99 {bare_p99:.1f} ms "
                      f"(ratios {p50 / bare_p50:.2f} / {p99 / bare_p99:.2f})")
    page_p50, page_p99 = percentiles(pages)
    page = Figure(f"api: a page of 100 from a space of {space_size:,}", len(pages), p50_ms=page_p50,
                  p99_ms=page_p99, target="p99 < 50 ms", met=page_p99 < 50)
    return [post, page]
