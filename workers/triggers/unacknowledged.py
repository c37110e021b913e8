"""Sends the broker has not acknowledged yet: what the triggers' consumer waits for before it commits.

The agent does not wait for each batch of commands to be acknowledged before it takes the next
batch; the consumer's commit (``lean_faust``) settles every earlier send first, so no offset passes
a command that was not delivered (at-least-once).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

UNACKNOWLEDGED_BATCHES = 4


class UnacknowledgedSends:
    """Batches of sends the broker has not acknowledged yet, oldest first, at most a few."""

    def __init__(self, limit: int = UNACKNOWLEDGED_BATCHES) -> None:
        self._pending: deque[asyncio.Future[Any]] = deque()
        self._limit = limit
        self._failure: BaseException | None = None

    async def add(self, deliveries: Sequence[asyncio.Future[Any]],
                  on_acknowledged: Callable[[], None] | None = None) -> None:
        """Track one batch; raise if an earlier one failed; wait while too many are outstanding."""
        self._raise_if_failed()
        if deliveries:
            batch = asyncio.gather(*deliveries)
            if on_acknowledged is not None:
                batch.add_done_callback(lambda done: done.cancelled() or done.exception() or on_acknowledged())
            self._pending.append(batch)
        elif on_acknowledged is not None:
            on_acknowledged()
        while self._pending and (self._pending[0].done() or len(self._pending) > self._limit):
            await self._settle_oldest()

    async def settled(self) -> None:
        """Return once every tracked send is acknowledged; raise if any failed (then nothing may be committed)."""
        while self._pending:
            await self._settle_oldest()
        self._raise_if_failed()

    def _raise_if_failed(self) -> None:
        if self._failure is not None:
            raise RuntimeError("a command was not delivered: no offset is committed past it") from self._failure

    async def _settle_oldest(self) -> None:
        oldest = self._pending[0]
        try:
            # Shielded: a waiter cancelled (a commit given up at shutdown) leaves the sends in flight and
            # tracked, so no later commit passes them unacknowledged.
            await asyncio.shield(oldest)
        except Exception as error:
            self._failure = self._failure or error
            self._forget(oldest)
            raise
        self._forget(oldest)

    def _forget(self, batch: asyncio.Future[Any]) -> None:
        if self._pending and self._pending[0] is batch:  # the agent and a commit may both have waited on it
            self._pending.popleft()
