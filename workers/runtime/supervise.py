"""A worker's main loop with its helper tasks beside it (a firer, a settings follower, retention)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Coroutine
from typing import Any


async def run_beside(main: Awaitable[None], *helpers: Coroutine[Any, Any, None]) -> None:
    """Run ``main`` with ``helpers`` as tasks beside it. The helpers end when it does; a helper that fails
    ends it too, with the helper's error, so the process stops and its supervisor restarts it, instead of the
    helper's work stopping unseen while the main loop looks healthy."""
    running = asyncio.ensure_future(main)
    tasks = {asyncio.create_task(helper) for helper in helpers}
    try:
        while True:
            done, _ = await asyncio.wait({running, *tasks}, return_when=asyncio.FIRST_COMPLETED)
            if running in done:
                running.result()
                return
            for task in done:
                task.result()  # a helper's failure raises here
            tasks -= done
    finally:
        for task in (running, *tasks):
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(running, *tasks, return_exceptions=True)
