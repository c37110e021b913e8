"""Webhooks (issue 22): deliveries per second to a local receiver that answers at once, against a raw
aiohttp loop posting the same bodies in the same run; latency from a lifecycle event's publication to its
delivery at 200 events/s; the worker's memory with 10,000 pending retries."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

import aiohttp
import asyncpg
import orjson
from aiohttp import web

from bench.figures import Figure, percentiles
from bench.plumbing import bench_worker, produce_all, skip_backlog
from models import utc_iso
from models.lifecycle import event_id_for
from suspensions.local.processes import WorkerProcess
from topics import SUSPENSION_EVENTS
from workers.runtime.config import Settings
from workers.webhooks import store
from workers.webhooks.signing import event_body, new_secret, signature_header

ENV = {"SUSPENSIONS_WEBHOOKS_ALLOW_PRIVATE": "true"}


class Sink:
    """A receiver that answers 204 at once and notes when each webhook-id arrived."""

    def __init__(self) -> None:
        self.arrived: dict[str, float] = {}
        self.count = 0
        self.done = asyncio.Event()
        self.expected = 0

    async def receive(self, request: web.Request) -> web.Response:
        await request.read()
        self.arrived.setdefault(request.headers.get("webhook-id", ""), time.time())
        self.count += 1
        if self.expected and len(self.arrived) >= self.expected:
            self.done.set()
        return web.Response(status=204)

    def expect(self, count: int) -> None:
        self.arrived.clear()
        self.count, self.expected = 0, count
        self.done.clear()


@asynccontextmanager
async def sink() -> AsyncIterator[tuple[Sink, str]]:
    receiving = Sink()
    app = web.Application()
    app.router.add_post("/hook", receiving.receive)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield receiving, f"http://127.0.0.1:{runner.addresses[0][1]}/hook"
    finally:
        await runner.cleanup()


def event(space: str, customer: str, version: int) -> dict[str, object]:
    return {"event_id": event_id_for(customer, version), "type": "suspended" if version % 2 else "lifted",
            "occurred_at": utc_iso(), "space_id": space, "customer_id": customer, "version": version,
            "reasons_before": [], "reasons_after": ["manual"], "actor": "admin:bench", "source": "operator_cli",
            "command_id": str(uuid.uuid4()), "cause": None, "note": None, "missed_invoices": None,
            "invoices_billed": None, "invoices_waived": None, "schedules": None, "fired_delay_ms": None}


async def register(settings: Settings, space: str, url: str) -> tuple[str, str]:
    conn = await asyncpg.connect(settings.database_url)
    try:
        row, secret = await store.add_endpoint(conn, space, url, [], "bench", True, datetime.now(UTC))
    finally:
        await conn.close()
    return row["endpoint_id"], secret


async def raw_loop(url: str, bodies: list[tuple[str, bytes]], secret: str, concurrency: int) -> float:
    """The baseline: aiohttp posting the same signed bodies, ``concurrency`` at a time; deliveries per second."""
    queue: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
    for item in bodies:
        queue.put_nowait(item)

    async with aiohttp.ClientSession() as session:
        async def post() -> None:
            while not queue.empty():
                message_id, body = queue.get_nowait()
                at = datetime.now(UTC)
                headers = {"content-type": "application/json", "webhook-id": message_id,
                           "webhook-timestamp": str(int(at.timestamp())),
                           "webhook-signature": signature_header([secret], message_id, at, body)}
                async with session.post(url, data=body, headers=headers) as response:
                    await response.read()

        started = time.perf_counter()
        await asyncio.gather(*(post() for _ in range(concurrency)))
        return len(bodies) / (time.perf_counter() - started)


async def throughput_case(settings: Settings, count: int) -> Figure:
    """``count`` events of ``count // 10`` customers already on the topic, then a fresh webhooks worker: from
    its first delivery to its last, against the raw loop with as many requests in flight as the worker
    allows one endpoint."""
    space = f"bench-hooks-{uuid.uuid4().hex[:8]}"
    customers = [f"whc-{uuid.uuid4().hex[:10]}" for _ in range(max(1, count // 10))]
    events = [event(space, customers[i % len(customers)], i // len(customers) + 1) for i in range(count)]
    values = [orjson.dumps(item) for item in events]
    async with sink() as (receiving, url):
        endpoint, secret = await register(settings, space, url)
        bodies = [(str(item["event_id"]), event_body(str(item["type"]), str(item["occurred_at"]), value))
                  for item, value in zip(events, values, strict=True)]
        per_endpoint = settings.webhooks_max_in_flight_per_endpoint
        receiving.expect(count)
        baseline = await raw_loop(url, bodies, new_secret(), per_endpoint)
        await skip_backlog(settings, settings.webhooks_group, SUSPENSION_EVENTS.name)
        await produce_all(settings, SUSPENSION_EVENTS.name,
                          [(str(item["customer_id"]).encode(), value) for item, value in zip(events, values, strict=True)])
        receiving.expect(count)
        worker = bench_worker(settings, "webhooks", **ENV)
        try:
            await worker.wait_ready(120)
            await asyncio.wait_for(receiving.done.wait(), 600)
            arrivals = sorted(receiving.arrived.values())
            seconds = max(arrivals[-1] - arrivals[0], 1e-3)
            rss = worker.peak_rss_bytes() / 1e6
        finally:
            worker.stop()
        duplicates = receiving.count - len(receiving.arrived)
    figure = Figure("webhooks: deliveries to one endpoint", count, count / seconds,
                    f"raw aiohttp loop, {per_endpoint} in flight", baseline, peak_rss_mb=rss, seconds=seconds,
                    target="ratio >= 0.5", notes=[f"{len(customers):,} customers; each attempt recorded in PostgreSQL",
                                                  f"{duplicates} duplicate(s)", f"endpoint {endpoint}"])
    figure.met = (figure.ratio or 0) >= 0.5
    return figure


async def latency_case(settings: Settings, rate: int, seconds: float) -> Figure:
    """Events published at ``rate``/s while a webhooks worker runs: publication to arrival, p50 and p99."""
    space = f"bench-hooks-{uuid.uuid4().hex[:8]}"
    total = int(rate * seconds)
    async with sink() as (receiving, url):
        await register(settings, space, url)
        await skip_backlog(settings, settings.webhooks_group, SUSPENSION_EVENTS.name)
        worker: WorkerProcess = bench_worker(settings, "webhooks", **ENV)
        from aiokafka import AIOKafkaProducer

        producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, acks="all")
        await producer.start()
        published: dict[str, float] = {}
        try:
            await worker.wait_ready(120)
            receiving.expect(total)
            started = time.perf_counter()
            for index in range(total):
                item = event(space, f"whl-{index % 500}-{space}", index // 500 + 1)
                published[str(item["event_id"])] = time.time()
                await producer.send(SUSPENSION_EVENTS.name, orjson.dumps(item), key=str(item["customer_id"]).encode())
                ahead = started + (index + 1) / rate - time.perf_counter()
                if ahead > 0:
                    await asyncio.sleep(ahead)
            await producer.flush()
            await asyncio.wait_for(receiving.done.wait(), 120)
        finally:
            await producer.stop()
            worker.stop()
    latencies = [receiving.arrived[key] - at for key, at in published.items()]
    p50, p99 = percentiles(latencies)
    return Figure(f"webhooks: publication to delivery at {rate}/s", total, rate, p50_ms=p50, p99_ms=p99,
                  seconds=seconds, notes=["through the topic, the worker's batch transaction and its dispatcher"])


async def pending_memory_case(settings: Settings, pending: int) -> Figure:
    """The worker's peak memory with ``pending`` deliveries waiting for their retry (one per customer, due over
    the next hour), running its polls, its gauge and its pruning for a few seconds, against a worker with
    none."""
    conn = await asyncpg.connect(settings.database_url)
    try:
        idle = bench_worker(settings, "webhooks", **ENV)
        try:
            await idle.wait_ready(120)
            await asyncio.sleep(3)  # a measurement window, not synchronisation
            idle_rss = idle.peak_rss_bytes() / 1e6
        finally:
            idle.stop()
        space = f"bench-hooks-{uuid.uuid4().hex[:8]}"
        row, _ = await store.add_endpoint(conn, space, "http://127.0.0.1:9/never", [], "bench", True, datetime.now(UTC))
        now = datetime.now(UTC)
        body = event_body("suspended", utc_iso(), orjson.dumps(event(space, "c", 1)))
        await conn.copy_records_to_table(
            "webhook_deliveries",
            columns=["endpoint_id", "event_id", "event_type", "customer_id", "source_partition", "occurred_at", "body",
                     "attempts", "next_attempt_at", "created_at", "last_error"],
            records=[(row["endpoint_id"], f"e-{space}-{i}", "suspended", f"whm-{i}", i % settings.topic_partitions, now,
                      body, 1, now + timedelta(seconds=60 + 3600 * i / pending), now, "HTTP 500")
                     for i in range(pending)])
        worker = bench_worker(settings, "webhooks", **ENV)
        try:
            await worker.wait_ready(120)
            started = time.perf_counter()
            await asyncio.sleep(6)  # polls, the gauge (every 5 s) and pruning run meanwhile
            rss = worker.peak_rss_bytes() / 1e6
            claim = await _claim_ms(conn, settings)
            seconds = time.perf_counter() - started
        finally:
            worker.stop()
        await conn.execute("DELETE FROM webhook_endpoints WHERE endpoint_id = $1", row["endpoint_id"])
    finally:
        await conn.close()
    return Figure(f"webhooks: {pending:,} pending retries", pending, peak_rss_mb=rss, seconds=seconds,
                  target="peak RSS within 20 MB of an idle worker's", met=rss - idle_rss <= 20,
                  notes=[f"idle worker: {idle_rss:.0f} MB", f"one poll for due deliveries: {claim:.1f} ms"])


async def _claim_ms(conn: asyncpg.Connection, settings: Settings) -> float:
    """One poll of the dispatcher's (nothing due), as it runs every webhooks_poll_interval_ms."""
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        async with conn.transaction():
            await store.claim_due(conn, list(range(settings.topic_partitions)), [], 64, 8, 25.0)
        best = min(best, (time.perf_counter() - started) * 1000)
    return best


async def webhook_cases(settings: Settings, count: int, rate: int, seconds: float, pending: int) -> list[Figure]:
    return [await throughput_case(settings, count), await latency_case(settings, rate, seconds),
            await pending_memory_case(settings, pending)]
