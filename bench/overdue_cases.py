"""Issue 23: invoices falling overdue in the same minute, fired by the overdue worker and applied by the state
worker, each customer suspended once."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
from aiokafka.partitioner import DefaultPartitioner

from bench.figures import Figure
from bench.plumbing import bench_worker, skip_backlog
from topics import INVOICE_STATUS, SUSPENSION_COMMANDS
from workers.runtime.config import Settings


async def overdue_case(settings: Settings, count: int, state_rate: float | None) -> Figure:
    """``count`` open invoices of as many customers falling overdue at the same moment (stored as the overdue
    worker stores `invoice.status`): how long after the moment the last suspension was applied, and that
    rate as a ratio of the state worker's own throughput in the same run."""
    space = f"overdue-{uuid.uuid4().hex[:6]}"
    moment = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=20 + count / 20_000)
    partitioner = DefaultPartitioner()
    partitions = list(range(settings.topic_partitions))
    now = datetime.now(UTC)
    rows = []
    for i in range(count):
        customer = f"{space}-{i}"
        partition = partitioner(customer.encode(), partitions, partitions)
        rows.append((customer, f"inv-{i}", space, "open", moment, "120.00", "EUR", f"ev-{i}", partition, now))
    conn = await asyncpg.connect(settings.database_url)
    try:
        await conn.copy_records_to_table("customer_invoices", records=rows, columns=[
            "customer_id", "invoice_id", "space_id", "status", "due_at", "amount", "currency", "issued_event_id",
            "source_partition", "updated_at"])
        await conn.execute("INSERT INTO overdue_settings VALUES ($1, 0, false, 'bill', $2)", space,
                           now - timedelta(days=1))
    finally:
        await conn.close()
    await skip_backlog(settings, settings.state_group, SUSPENSION_COMMANDS.name)
    await skip_backlog(settings, settings.overdue_group, INVOICE_STATUS.name)
    worker = bench_worker(settings, "overdue", "state")
    try:
        await worker.wait_ready(120)
        conn = await asyncpg.connect(settings.database_url)
        try:
            deadline = time.monotonic() + 600
            while await conn.fetchval("SELECT count(*) FROM customer_state WHERE space_id = $1 AND suspended",
                                      space) < count:
                if time.monotonic() > deadline:
                    raise TimeoutError("not every customer suspended within 600 s")
                await asyncio.sleep(0.2)
            first, last, applied, once = await conn.fetchrow(
                "SELECT min(applied_at), max(applied_at), count(*), count(DISTINCT customer_id) FROM command_history "
                "WHERE space_id = $1 AND reason = 'overdue'", space)
        finally:
            await conn.close()
    finally:
        worker.stop()
    seconds = max((last - first).total_seconds(), 0.001)
    late_s = (last - moment).total_seconds()
    figure = Figure(f"overdue: {count:,} invoices due in the same minute", count, count / seconds, "state worker",
                    state_rate, seconds=late_s, target="each customer suspended once", met=applied == count == once)
    figure.notes.append(f"the last applied {late_s:.1f} s after the moment; {applied} suspensions for {once} customers")
    return figure
