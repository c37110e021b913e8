"""The one retry loop: exponential backoff on transient failures, until success or shutdown.

Used at start-up (a dependency not reachable yet: waiting beats a restart loop) and for every
batch (PostgreSQL or the broker gone for a while). Each failure is reported once per backoff
step, never in a tight loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")

OnFailure = Callable[[BaseException, float], Awaitable[None] | None]


@dataclass(frozen=True)
class Backoff:
    initial_s: float
    max_s: float

    def delays(self) -> Iterator[float]:
        delay = self.initial_s
        while True:
            yield delay
            delay = min(delay * 2, self.max_s)


async def retry(
    action: Callable[[], Awaitable[T]],
    transient: tuple[type[BaseException], ...],
    backoff: Backoff,
    on_failure: OnFailure,
    stop: asyncio.Event | None = None,
) -> tuple[T, bool]:
    """Call ``action`` until it returns; a transient error calls ``on_failure(error, delay)`` and waits.

    Returns the result and whether the first attempt succeeded. When ``stop`` is set, a failure is
    raised instead of retried (the process is shutting down); cancellation ends the loop too.
    """
    first_attempt = True
    for delay in backoff.delays():
        try:
            return await action(), first_attempt
        except transient as error:
            if stop is not None and stop.is_set():
                raise
            outcome = on_failure(error, delay)
            if outcome is not None:
                await outcome
            first_attempt = False
            await asyncio.sleep(delay)
    raise AssertionError("unreachable: the backoff never ends")
