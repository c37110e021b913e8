"""Measuring a worker process from outside: how long it took to consume a backlog."""

from __future__ import annotations

import asyncio
import time

from suspensions.local.processes import metric_total


async def time_consumption(port: int | list[int], total: int, timeout_s: float = 600.0, poll_s: float = 0.1) -> float:
    """Seconds from the first consumed record to the last (records_consumed_total, summed over the
    worker processes of one group)."""
    name = "suspensions_records_consumed_total"
    ports = port if isinstance(port, list) else [port]
    deadline = time.monotonic() + timeout_s
    started = None
    while True:
        consumed = sum([await asyncio.to_thread(metric_total, each, name) for each in ports])
        now = time.perf_counter()
        if started is None and consumed > 0:
            started = now
        if consumed >= total:
            return now - (started or now) or poll_s
        if time.monotonic() > deadline:
            raise TimeoutError(f"worker consumed {consumed} of {total} records within {timeout_s}s")
        await asyncio.sleep(poll_s)
