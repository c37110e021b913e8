"""Runs the named workers in one process until stopped, then shuts them down cleanly.

Start-up and shutdown are explicit: SIGINT/SIGTERM set the stop event, every
worker finishes the batch it holds, commits, and leaves its group; whatever is
still running after the grace period is cancelled (its batch is redelivered).
What each worker is and needs comes from the registry (``workers/registry.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Sequence

import asyncpg

from suspensions.lag import LagProbe
from workers.registry import WORKER_NAMES, WorkerSpec, consumer_groups, workers_named
from workers.runtime.broker_check import BrokerCheck, check_broker
from workers.runtime.config import Settings
from workers.runtime.context import WorkerContext
from workers.runtime.db.pool import connect_pool, database_answers
from workers.runtime.health import WorkerHealth
from workers.runtime.http import start_http
from workers.runtime.kafka import start_producer
from workers.runtime.metrics import Metrics

log = logging.getLogger(__name__)

DEPENDENCY_CHECK_INTERVAL_S = 2.0


def _report_broker(workers: Sequence[tuple[WorkerSpec, WorkerHealth]], check: BrokerCheck) -> None:
    for _, health in workers:
        health.kafka_ok, health.kafka_cause = check.ok, None if check.ok else str(check)


async def _watch_dependencies(settings: Settings, pool: asyncpg.Pool | None,
                              workers: Sequence[tuple[WorkerSpec, WorkerHealth]], stop: asyncio.Event) -> None:
    """Keep readiness true to what the process can reach right now, and why not."""
    while not stop.is_set():
        _report_broker(workers, await check_broker(settings, timeout_s=3))
        database_ok = await database_answers(pool) if pool is not None else True
        for spec, health in workers:
            if spec.needs_database:
                health.database_ok = database_ok
                health.database_cause = None if database_ok else "no answer to SELECT 1"
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), DEPENDENCY_CHECK_INTERVAL_S)


async def _sample_lag(settings: Settings, specs: Sequence[WorkerSpec], metrics: Metrics, stop: asyncio.Event) -> None:
    """Export the lag of this process's groups as a gauge; a failed sample is logged, never fatal."""
    groups = consumer_groups(settings)
    wanted = {spec.group(settings): groups[spec.group(settings)] for spec in specs}
    while not stop.is_set():
        try:
            async with LagProbe(settings) as probe:
                for group, topics in wanted.items():
                    sample = await probe.sample(group, topics)
                    for part in sample.partitions:
                        metrics.consumer_lag.labels(group=group, topic=part.topic,
                                                    partition=str(part.partition)).set(part.lag)
        except Exception as error:  # noqa: BLE001 - monitoring must not stop the workers
            log.warning("lag sample failed", extra={"error": repr(error)})
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), settings.lag_sample_interval_s)


API = "api"  # the operator API and console: not a worker, one more runnable of the process
RUNNABLE_NAMES = (*WORKER_NAMES, API)


async def run_workers(
    settings: Settings, names: Sequence[str], stop: asyncio.Event, metrics: Metrics | None = None
) -> None:
    specs = workers_named(name for name in names if name != API)
    metrics = metrics or Metrics()
    running = [(spec, WorkerHealth(spec.name)) for spec in specs]
    # The API reports beside the workers on the internal port (its /metrics and /readyz live there).
    api_health = WorkerHealth(API) if API in names else None
    tasks: list[asyncio.Task[None]] = []
    http_runner = None
    pool = None
    producer = None
    try:
        if settings.http_port:  # first: /readyz says why while the dependencies are not reachable yet
            healths = [health for _, health in running] + ([api_health] if api_health is not None else [])
            http_runner = await start_http(metrics, healths, settings.http_port)
            log.info("http endpoints serving", extra={"port": settings.http_port})
        if API in names:
            from suspensions.api.server import serve_api

            tasks.append(asyncio.create_task(serve_api(settings, stop, metrics, api_health), name="api"))
        if specs:
            producer = await start_producer(settings, stop,
                                            on_unavailable=lambda check: _report_broker(running, check))
            if any(spec.needs_database for spec in specs):
                pool = await connect_pool(settings, stop,
                                          on_unavailable=lambda cause: _report_database(running, cause))
            for spec, health in running:
                context = WorkerContext(spec.name, spec.group(settings), settings, metrics, health, producer,
                                        pool if spec.needs_database else None)
                tasks.append(asyncio.create_task(spec.build(context).run(stop), name=f"worker-{spec.name}"))
            tasks.append(asyncio.create_task(_watch_dependencies(settings, pool, running, stop), name="health"))
            if settings.lag_sample_interval_s > 0:
                tasks.append(asyncio.create_task(_sample_lag(settings, specs, metrics, stop), name="lag"))

        log.info("workers running", extra={"workers": [spec.name for spec in specs]})
        stop_waiter = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait([stop_waiter, *tasks], return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            error = None if task is stop_waiter else task.exception()
            if error is not None:
                raise error
    finally:
        stop.set()
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=settings.shutdown_grace_s)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        if producer is not None:
            await producer.stop()
        if pool is not None:
            await pool.close()
        if http_runner is not None:
            await http_runner.cleanup()


def _report_database(workers: Sequence[tuple[WorkerSpec, WorkerHealth]], cause: str) -> None:
    for spec, health in workers:
        if spec.needs_database:
            health.database_ok, health.database_cause = False, cause


def process_count(processes: str) -> int:
    """``--processes``: a number of at least 1, or ``auto`` for the machine's cores."""
    if processes == "auto":
        return os.cpu_count() or 1
    count = int(processes)
    if count < 1:
        raise ValueError("--processes must be at least 1 (or auto)")
    return count


async def run_processes(settings: Settings, names: Sequence[str], processes: int, stop: asyncio.Event,
                        parent_pid: int | None = None) -> int:
    """Run the named workers in ``processes`` processes: this one and ``processes - 1`` more started as
    ``suspensions run NAMES --processes 1``. Each worker's processes are members of its one consumer group, so
    they split its partitions (each partition still has one owner at a time, and its lock makes two take
    turns). The API runs in this process only (one port); another process's ``/metrics`` and ``/readyz`` are
    on ``SUSPENSIONS_HTTP_PORT`` + its number (none when the port is 0). Stopping this process stops the
    others, each finishing its batches; one that ends by itself stops them all, so that whatever supervises
    this process sees it end and restarts it whole; and one whose first process is gone (killed) stops too
    (``parent_pid``), so none outlives it. Returns the exit code: 0, or 1 when a process failed."""
    others = [name for name in names if name != API]
    children: list[asyncio.subprocess.Process] = []
    failed = False
    if others:
        for number in range(1, processes):
            env = {**os.environ,
                   "SUSPENSIONS_HTTP_PORT": str(settings.http_port + number if settings.http_port else 0)}
            children.append(await asyncio.create_subprocess_exec(
                sys.executable, "-m", "suspensions", "run", *others, "--processes", "1",
                "--parent-pid", str(os.getpid()), env=env))
        log.info("worker processes started", extra={"processes": processes, "workers": others})

    async def watch(child: asyncio.subprocess.Process) -> None:
        nonlocal failed
        code = await child.wait()
        if not stop.is_set():
            failed = True
            log.error("a worker process ended by itself: stopping the others",
                      extra={"pid": child.pid, "exit_code": code})
            stop.set()

    async def follow(parent: int) -> None:
        while not stop.is_set():
            if os.getppid() != parent:
                log.warning("the first worker process is gone: stopping", extra={"parent_pid": parent})
                stop.set()
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.5)

    watchers = [asyncio.create_task(watch(child)) for child in children]
    if parent_pid is not None:
        watchers.append(asyncio.create_task(follow(parent_pid)))
    try:
        await run_workers(settings, names, stop)
    except Exception:
        failed = True
        raise
    finally:
        stop.set()
        for child in children:
            if child.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    child.send_signal(signal.SIGTERM)
        for child in children:
            try:
                await asyncio.wait_for(child.wait(), settings.shutdown_grace_s + 5)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    child.kill()
                await child.wait()
            failed = failed or child.returncode not in (0, -signal.SIGTERM)
        await asyncio.gather(*watchers, return_exceptions=True)
    return 1 if failed else 0


def install_signal_handlers(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
