"""The triggers worker's sends awaited at commit time: nothing is committed past an unacknowledged or failed send."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from workers.triggers.unacknowledged import UnacknowledgedSends


async def until(condition: Callable[[], bool], timeout_s: float = 1.0) -> None:
    """Let the loop run callbacks until the condition holds."""
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0)


async def test_settled_waits_for_every_send_and_counts_only_acknowledged_batches() -> None:
    loop = asyncio.get_running_loop()
    sends = UnacknowledgedSends(limit=4)
    first, second = loop.create_future(), loop.create_future()
    acknowledged: list[str] = []
    await sends.add([first], on_acknowledged=lambda: acknowledged.append("first"))
    await sends.add([second], on_acknowledged=lambda: acknowledged.append("second"))
    settling = asyncio.ensure_future(sends.settled())
    first.set_result(None)
    await until(lambda: acknowledged == ["first"])
    assert not settling.done()  # the second is still out: no commit yet
    second.set_result(None)
    await asyncio.wait_for(settling, 1)
    assert acknowledged == ["first", "second"]


async def test_a_failed_send_stops_every_later_commit() -> None:
    loop = asyncio.get_running_loop()
    sends = UnacknowledgedSends(limit=4)
    failing = loop.create_future()
    acknowledged: list[str] = []
    await sends.add([failing], on_acknowledged=lambda: acknowledged.append("failing"))
    failing.set_exception(ConnectionError("broker gone"))
    with pytest.raises(ConnectionError):
        await sends.settled()  # the commit waiting on it fails with the cause
    for _ in range(2):  # and every later batch and commit refuses, not only the first
        with pytest.raises(RuntimeError, match="no offset is committed past it"):
            await sends.add([loop.create_future()])
        with pytest.raises(RuntimeError, match="no offset is committed past it"):
            await sends.settled()
    assert acknowledged == []


async def test_at_most_limit_batches_stay_outstanding() -> None:
    loop = asyncio.get_running_loop()
    sends = UnacknowledgedSends(limit=2)
    batches = [loop.create_future() for _ in range(3)]
    await sends.add([batches[0]])
    await sends.add([batches[1]])
    third = asyncio.ensure_future(sends.add([batches[2]]))
    await until(lambda: len(sends._pending) == 3)
    assert not third.done()  # a third outstanding batch waits for the oldest
    batches[0].set_result(None)
    await asyncio.wait_for(third, 1)


async def test_a_commit_given_up_leaves_the_sends_tracked() -> None:
    loop = asyncio.get_running_loop()
    sends = UnacknowledgedSends(limit=4)
    delivery = loop.create_future()
    await sends.add([delivery])
    settling = asyncio.ensure_future(sends.settled())
    # Cancel only once the commit waits on the sends (the future an asyncio task is blocked on).
    await until(lambda: getattr(settling, "_fut_waiter", None) is not None)
    settling.cancel()
    with pytest.raises(asyncio.CancelledError):
        await settling
    assert not delivery.cancelled()  # the send itself goes on
    later = asyncio.ensure_future(sends.settled())
    await until(lambda: bool(sends._pending))
    assert not later.done()  # the next commit still waits for it
    delivery.set_result(None)
    await asyncio.wait_for(later, 1)
