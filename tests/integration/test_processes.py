"""`suspensions run --processes N` (issue 24): one command, N members of each worker's group, stopped together."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.support import WorkerProcess, wait_until
from workers.runtime.config import Settings

pytestmark = pytest.mark.integration


def partitions_held(port: int, worker: str) -> int | None:
    """The partitions the process on ``port`` holds for ``worker`` (None: it does not answer)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as response:
            return int(json.loads(response.read())["workers"][worker]["partitions"])
    except urllib.error.HTTPError as error:  # not ready yet: the same body, with 503
        return int(json.loads(error.read())["workers"][worker]["partitions"])
    except OSError:
        return None


async def test_two_processes_split_the_partitions_and_stop_together(isolated: Settings, tmp_path: Path) -> None:
    worker = WorkerProcess(isolated, ("state", "--processes", "2"), log_path=tmp_path / "state.log").start()
    ports = [worker.http_port, worker.http_port + 1]  # the second process: the port + its number
    try:
        async def split() -> bool:
            held = [await asyncio.to_thread(partitions_held, port, "state") for port in ports]
            return all(held) and sum(h or 0 for h in held) == isolated.topic_partitions

        await wait_until(split, 90, "both processes to hold some of the state worker's partitions")
    finally:
        code = worker.stop()
    assert code == 0
    assert await asyncio.to_thread(partitions_held, ports[1], "state") is None  # the second process stopped too


async def test_the_other_processes_stop_when_the_first_is_killed(isolated: Settings, tmp_path: Path) -> None:
    worker = WorkerProcess(isolated, ("state", "--processes", "2"), log_path=tmp_path / "state.log").start()
    second = worker.http_port + 1
    try:
        async def answers() -> bool:
            return await asyncio.to_thread(partitions_held, second, "state") is not None

        await wait_until(answers, 90, "the second process to serve /readyz")
        worker.kill()  # SIGKILL: the first process cannot stop the others itself

        async def gone() -> bool:
            return await asyncio.to_thread(partitions_held, second, "state") is None

        await wait_until(gone, 60, "the second process to stop after the first was killed")
    finally:
        worker.stop()
