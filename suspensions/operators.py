"""Operator actions: build contract commands, publish them, and wait for the state worker.

The CLI is one more upstream: it never writes suspension state itself.
"""

from __future__ import annotations

import asyncio
import csv
import re
import uuid
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol, TextIO
from zoneinfo import ZoneInfo

import asyncpg
from aiokafka import AIOKafkaProducer

from models import ID_MAX_LENGTH, TEXT_MAX_LENGTH, Action, MissedInvoices, Reason, Source, SuspensionCommand, utc_iso
from models.base import MULTI_LINE_PATTERN, SINGLE_LINE_PATTERN
from models.moments import MomentError, in_future, parse_when, shown
from suspensions.queries import command_outcomes
from workers.runtime.publishing import command_record, publish_all


def manual_command(
    action: Action,
    customer_id: str,
    space_id: str,
    actor: str,
    note: str | None = None,
    missed_invoices: MissedInvoices | None = None,
    command_id: str | None = None,
    source: Source = Source.OPERATOR_CLI,
    at: datetime | None = None,
    until: datetime | None = None,
    schedule_id: str | None = None,
) -> SuspensionCommand:
    """Raises pydantic.ValidationError when an argument breaks the contract (e.g. actor)."""
    return SuspensionCommand(
        command_id=command_id or str(uuid.uuid4()),
        issued_at=datetime.now(UTC),
        space_id=space_id,
        customer_id=customer_id,
        action=action,
        reason=Reason.MANUAL,
        actor=actor,
        note=note or None,
        missed_invoices=missed_invoices if action is Action.LIFT else None,
        source=source,
        at=at,
        until=until,
        schedule_id=schedule_id,
    )


@dataclass(frozen=True)
class Moments:
    at: datetime | None
    until: datetime | None


def schedule_moments(at: str | None, until: str | None, tz: ZoneInfo, now: datetime | None = None) -> Moments:
    """An operator's --at and --until as UTC instants in the future (MomentError otherwise)."""
    now = now or datetime.now(UTC)
    at_moment = in_future(parse_when(at, tz), now, at) if at else None
    until_moment = in_future(parse_when(until, tz), now, until) if until else None
    if at_moment and until_moment and until_moment <= at_moment:
        raise MomentError(f"--until {until!r} is not after --at {at!r}")
    return Moments(at_moment, until_moment)


def scheduled_summary(command: SuspensionCommand, tz: ZoneInfo) -> list[dict[str, str]]:
    """What a command schedules, for the operator who sent it."""
    lines = []
    if command.at is not None:
        lines.append({"schedule_id": command.command_id, "action": command.action.value,
                      "at": utc_iso(command.at), "when": shown(command.at, tz)})
    if command.until is not None:
        lines.append({"schedule_id": f"{command.command_id}:until", "action": "lift",
                      "at": utc_iso(command.until), "when": shown(command.until, tz)})
    return lines


def schedule_view(row: Mapping[str, Any], tz: ZoneInfo) -> dict[str, object]:
    """A schedule as operators read it: UTC and the space's local time."""
    return {"schedule_id": row["schedule_id"], "customer_id": row["customer_id"], "action": row["action"],
            "at": utc_iso(row["at"]), "at_local": row["at"].astimezone(tz).isoformat(), "time_zone": tz.key,
            "when": shown(row["at"], tz), "missed_invoices": row["missed_invoices"], "actor": row["actor"],
            "note": row["note"]}


async def publish(producer: AIOKafkaProducer, commands: list[SuspensionCommand]) -> None:
    """Publish a batch and wait for the broker's acknowledgement of all of it."""
    await publish_all(producer, (command_record(command) for command in commands))


async def wait_for_outcomes(
    conn: asyncpg.Connection, command_ids: list[str], timeout_s: float, poll_s: float = 0.1
) -> dict[str, str]:
    """Outcomes (changed / noop / rejected) of the commands, as far as applied within the timeout."""
    return await poll_outcomes(lambda chunk: command_outcomes(conn, chunk), command_ids, timeout_s, poll_s)


class Connections(Protocol):
    """A pool: a connection for the length of an ``async with``."""

    def acquire(self) -> AbstractAsyncContextManager[asyncpg.Connection]: ...


async def wait_for_outcomes_pooled(
    pool: Connections, command_ids: list[str], timeout_s: float, poll_s: float = 0.1,
    keep_going: Callable[[], Awaitable[bool]] | None = None,
) -> dict[str, str]:
    """As ``wait_for_outcomes``, holding a connection of ``pool`` only for each poll's query: a caller that
    waits seconds for the state worker (the API's ``?wait=true``, a bulk job) ties up no connection meanwhile.
    ``keep_going`` is asked between polls; False ends the wait early."""
    async def fetch(chunk: list[str]) -> dict[str, str]:
        try:
            async with pool.acquire() as conn:
                return await command_outcomes(conn, chunk)
        except TimeoutError:  # no connection came free in time: nothing known yet, the next poll asks again
            return {}

    return await poll_outcomes(fetch, command_ids, timeout_s, poll_s, keep_going)


async def poll_outcomes(
    fetch: Callable[[list[str]], Awaitable[dict[str, str]]], command_ids: list[str], timeout_s: float,
    poll_s: float = 0.1, keep_going: Callable[[], Awaitable[bool]] | None = None,
) -> dict[str, str]:
    outcomes: dict[str, str] = {}
    remaining = list(command_ids)
    deadline = asyncio.get_running_loop().time() + timeout_s
    while remaining:
        for start in range(0, len(remaining), 5_000):
            chunk = remaining[start:start + 5_000]
            outcomes.update(await fetch(chunk))
        remaining = [command_id for command_id in remaining if command_id not in outcomes]
        if not remaining or asyncio.get_running_loop().time() > deadline:
            break
        await asyncio.sleep(poll_s)
        if keep_going is not None and not await keep_going():
            break
    return outcomes


async def wait_for_command(conn: asyncpg.Connection, command_id: str, timeout_s: float) -> str | None:
    return (await wait_for_outcomes(conn, [command_id], timeout_s)).get(command_id)


# --- bulk files -----------------------------------------------------------------------------


@dataclass(frozen=True)
class BulkLine:
    line_number: int
    customer_id: str
    space_id: str
    note: str | None


@dataclass(frozen=True)
class MalformedLine:
    line_number: int
    error: str


class CountingLines:
    """Lines of a text file, counting the bytes read so far (for progress while streaming)."""

    def __init__(self, handle: TextIO) -> None:
        self._handle = handle
        self.bytes_read = 0

    def __iter__(self) -> Iterator[str]:
        for line in self._handle:
            self.bytes_read += len(line.encode("utf-8"))
            yield line


_SINGLE_LINE = re.compile(SINGLE_LINE_PATTERN)
_MULTI_LINE = re.compile(MULTI_LINE_PATTERN)


def read_bulk_lines(handle: Iterable[str]) -> Iterator[BulkLine | MalformedLine]:
    """Stream a CSV of ``customer_id,space_id[,note]`` (header optional), one line at a time.

    A line is malformed unless its command would pass the contract: ids without control characters, a
    note without any but tab and line breaks (the contract's patterns, matched whole: Python's ``$``
    also matches before a final line feed). So one hostile line is reported, never the end of a job."""
    reader = csv.reader(handle)
    for row in reader:
        line_number = reader.line_num
        if not row or all(not cell.strip() for cell in row):
            continue
        cells = [cell.strip() for cell in row]
        if line_number == 1 and cells[:2] == ["customer_id", "space_id"]:
            continue
        if len(cells) < 2 or len(cells) > 3:
            yield MalformedLine(line_number, f"expected 2 or 3 columns (customer_id,space_id[,note]), got {len(cells)}")
            continue
        customer_id, space_id = cells[0], cells[1]
        note = cells[2] if len(cells) == 3 and cells[2] else None
        if not customer_id:
            yield MalformedLine(line_number, "customer_id is empty")
        elif not space_id:
            yield MalformedLine(line_number, "space_id is empty")
        elif len(customer_id) > ID_MAX_LENGTH or len(space_id) > ID_MAX_LENGTH:
            yield MalformedLine(line_number, f"customer_id or space_id longer than {ID_MAX_LENGTH} characters")
        elif note is not None and len(note) > TEXT_MAX_LENGTH:
            yield MalformedLine(line_number, f"note longer than {TEXT_MAX_LENGTH} characters")
        elif _SINGLE_LINE.fullmatch(customer_id) is None or _SINGLE_LINE.fullmatch(space_id) is None:
            yield MalformedLine(line_number, "customer_id or space_id holds a control character (U+0000 to U+001F)")
        elif note is not None and _MULTI_LINE.fullmatch(note) is None:
            yield MalformedLine(line_number, "note holds a control character other than tab, line feed and "
                                             "carriage return")
        else:
            yield BulkLine(line_number, customer_id, space_id, note)


@dataclass
class BulkSummary:
    sent: int = 0
    applied: int = 0
    noop: int = 0
    rejected: int = 0
    unconfirmed: int = 0
    malformed: list[MalformedLine] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {
            "sent": self.sent, "applied": self.applied, "noop": self.noop, "rejected": self.rejected,
            "unconfirmed": self.unconfirmed,
            "malformed": [{"line": m.line_number, "error": m.error} for m in self.malformed],
        }


def count_outcomes(summary: BulkSummary, outcomes: dict[str, str], command_ids: list[str]) -> None:
    for command_id in command_ids:
        outcome = outcomes.get(command_id)
        if outcome == "changed":
            summary.applied += 1
        elif outcome == "noop":
            summary.noop += 1
        elif outcome == "rejected":
            summary.rejected += 1
        else:
            summary.unconfirmed += 1


def bulk_command(
    action: Action, line: BulkLine, actor: str, missed_invoices: MissedInvoices | None
) -> SuspensionCommand:
    return manual_command(action, line.customer_id, line.space_id, actor, line.note, missed_invoices,
                          source=Source.BULK)

