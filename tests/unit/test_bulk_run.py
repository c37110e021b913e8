"""The one bulk run (operators.run_bulk) that the CLI and the API share: chunks, refusals, stops, outcomes."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import pytest

from models import Action, SuspensionCommand
from suspensions import operators
from suspensions.operators import UNCONFIRMED, BulkLine, run_bulk
from workers.state.transitions import Outcome

CSV = "customer_id,space_id\na,s\nb,s\nonly-one-column\nc,s\nd,s\ne,s\n"


class Published:
    def __init__(self) -> None:
        self.batches: list[list[SuspensionCommand]] = []

    async def __call__(self, _: Any, commands: list[SuspensionCommand]) -> None:
        self.batches.append(commands)


class Outcomes:
    """A pool whose connection answers from a table of outcomes by customer."""

    def __init__(self, by_customer: dict[str, Outcome], sent: Published) -> None:
        self.by_customer, self.sent = by_customer, sent

    @asynccontextmanager
    async def acquire(self) -> AsyncIterator[Any]:
        yield self

    async def answer(self, _: Any, command_ids: Sequence[str]) -> dict[str, Outcome]:
        commands = {c.command_id: c for batch in self.sent.batches for c in batch}
        return {cid: self.by_customer[commands[cid].customer_id] for cid in command_ids
                if commands[cid].customer_id in self.by_customer}


@pytest.fixture
def published(monkeypatch: pytest.MonkeyPatch) -> Published:
    sent = Published()
    monkeypatch.setattr(operators, "publish", sent)
    return sent


def lines() -> list[BulkLine | operators.MalformedLine]:
    return list(operators.read_bulk_lines(io.StringIO(CSV)))


async def test_chunks_without_waiting_leave_every_line_unconfirmed(published: Published) -> None:
    counts_seen: list[int] = []

    async def told(count: int) -> None:
        counts_seen.append(count)

    run = await run_bulk(lines(), Action.SUSPEND, "admin:1", None, producer=None, batch_size=2,
                         connections=None, timeout_s=1, published=told)
    assert [[c.customer_id for c in batch] for batch in published.batches] == [["a", "b"], ["c", "d"], ["e"]]
    assert counts_seen == [2, 4, 5]
    assert [m.line_number for m in run.malformed] == [4]
    assert run.counts() == {"changed": 0, "noop": 0, "rejected": 0, UNCONFIRMED: 5}
    assert not run.stopped


async def test_unknown_customers_are_not_sent_and_outcomes_come_from_the_enum(
        published: Published, monkeypatch: pytest.MonkeyPatch) -> None:
    pool = Outcomes({"a": Outcome.CHANGED, "c": Outcome.NOOP, "e": Outcome.REJECTED}, published)
    monkeypatch.setattr(operators, "command_outcomes", pool.answer)

    async def known(chunk: list[BulkLine]) -> set[str]:
        return {line.customer_id for line in chunk} - {"b"}

    run = await run_bulk(lines(), Action.LIFT, "admin:1", None, producer=None, batch_size=2,
                         connections=pool, timeout_s=0.3, poll_s=0.05, known=known)
    assert [line.customer_id for line in run.unknown] == ["b"]
    assert {line.customer_id: run.outcome(command) for line, command in run.sent} == {
        "a": Outcome.CHANGED, "c": Outcome.NOOP, "d": UNCONFIRMED, "e": Outcome.REJECTED}
    assert run.counts() == {"changed": 1, "noop": 1, "rejected": 1, UNCONFIRMED: 1}


async def test_a_stop_between_chunks_leaves_the_rest_unsent(published: Published) -> None:
    asked = 0

    async def keep_going() -> bool:
        nonlocal asked
        asked += 1
        return asked < 2  # the first chunk goes, then the token is revoked

    run = await run_bulk(lines(), Action.SUSPEND, "admin:1", None, producer=None, batch_size=2,
                         connections=None, timeout_s=1, keep_going=keep_going)
    assert run.stopped
    assert [line.customer_id for line, _ in run.sent] == ["a", "b"]
    assert [line.customer_id for line in run.unsent] == ["c", "d", "e"]
    assert [m.line_number for m in run.malformed] == [4]  # read to the end all the same


async def test_a_stop_while_waiting_keeps_the_outcomes_known(
        published: Published, monkeypatch: pytest.MonkeyPatch) -> None:
    pool = Outcomes({"a": Outcome.CHANGED}, published)
    monkeypatch.setattr(operators, "command_outcomes", pool.answer)
    asked = 0

    async def keep_going() -> bool:
        nonlocal asked
        asked += 1
        return asked <= 3  # every chunk goes (3), then the first poll's answer is all there is

    run = await run_bulk(lines(), Action.SUSPEND, "admin:1", None, producer=None, batch_size=2,
                         connections=pool, timeout_s=5, poll_s=0.01, keep_going=keep_going)
    assert run.stopped and not run.unsent
    assert run.counts() == {"changed": 1, "noop": 0, "rejected": 0, UNCONFIRMED: 4}
