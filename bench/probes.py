"""Measuring a worker process from outside: its counters, its peak memory, the records it wrote."""

from __future__ import annotations

import asyncio
import time
import urllib.request
from pathlib import Path


def counter(port: int, name: str) -> float:
    """Sum of a Prometheus counter across its labels, read from the worker's /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
        body = response.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in body.splitlines()
               if line.startswith(name) and (line[len(name)] in " {"))


def peak_rss_bytes(pid: int) -> int:
    """VmHWM: the highest resident set size the process reached."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


async def time_consumption(port: int, total: int, timeout_s: float = 600.0, poll_s: float = 0.1) -> float:
    """Seconds from the worker's first consumed record to its last (records_consumed_total)."""
    name = "suspensions_records_consumed_total"
    deadline = time.monotonic() + timeout_s
    started = None
    while True:
        consumed = await asyncio.to_thread(counter, port, name)
        now = time.perf_counter()
        if started is None and consumed > 0:
            started = now
        if consumed >= total:
            return now - (started or now) or poll_s
        if time.monotonic() > deadline:
            raise TimeoutError(f"worker consumed {consumed} of {total} records within {timeout_s}s")
        await asyncio.sleep(poll_s)
