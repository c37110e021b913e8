"""Operator actions: build contract commands, publish them, and wait for the state worker.

The CLI is one more upstream: it never writes suspension state itself. A bulk run (``run_bulk``) is
the same for the CLI and the API: outcomes are the state worker's ``Outcome`` values, or
``unconfirmed`` when none came in time.
"""

from __future__ import annotations

import asyncio
import csv
import functools
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Protocol, TextIO
from zoneinfo import ZoneInfo

import asyncpg
from aiokafka import AIOKafkaProducer
from pydantic import BaseModel, Field

from models import ID_MAX_LENGTH, TEXT_MAX_LENGTH, Action, MissedInvoices, Reason, Source, SuspensionCommand, utc_iso
from models.base import holds_control_character
from models.moments import MomentError, in_future, parse_when, shown
from suspensions.queries import command_outcomes
from workers.runtime.publishing import command_record, publish_all
from workers.state.transitions import Outcome


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


class PendingSchedule(BaseModel):
    """A pending schedule as operators read it (the CLI's ``schedule list --json``, the API's schedules)."""

    schedule_id: str
    customer_id: str
    action: Action
    at: str = Field(description="In UTC, ISO 8601")
    at_local: str = Field(description="In the space's time zone, ISO 8601 with its offset")
    time_zone: str = Field(description="The space's time zone (IANA)")
    when: str = Field(description="For people: UTC to the millisecond, with the local time beside it")
    missed_invoices: MissedInvoices | None
    actor: str
    note: str | None


def schedule_view(row: Mapping[str, Any], tz: ZoneInfo) -> PendingSchedule:
    """A schedule as operators read it: UTC and the space's local time."""
    return PendingSchedule(schedule_id=row["schedule_id"], customer_id=row["customer_id"], action=row["action"],
                           at=utc_iso(row["at"]), at_local=row["at"].astimezone(tz).isoformat(), time_zone=tz.key,
                           when=shown(row["at"], tz), missed_invoices=row["missed_invoices"], actor=row["actor"],
                           note=row["note"])


class InvoiceView(BaseModel):
    """A customer's invoice as the overdue rule knows it (`invoice.status`), as operators read it (the CLI's
    ``status``, the API's invoices, the console's customer page)."""

    invoice_id: str
    status: Literal["open", "paid", "voided"]
    overdue: bool = Field(description="Open, and its overdue moment has passed (the rule suspended, or is about to)")
    suspended_for: bool = Field(description="The overdue rule suspended the customer for this invoice")
    due_at: str | None = Field(description="In UTC, ISO 8601; null for an invoice only seen settled")
    due_local: str | None = Field(description="In the space's time zone, ISO 8601 with its offset")
    overdue_at: str | None = Field(description="When an open invoice falls (or fell) overdue under the space's rule, "
                                               "in UTC; null when settled or the rule is off")
    overdue_local: str | None
    time_zone: str
    when_due: str = Field(description="For people: UTC to the millisecond, with the local time beside it")
    when_overdue: str
    amount: str | None
    currency: str | None
    settled_at: str | None


def invoice_view(row: Mapping[str, Any], tz: ZoneInfo, now: datetime) -> InvoiceView:
    """An invoice row (``workers.runtime.db.invoices.customer_invoices``) with its moments in UTC and local time."""
    due, overdue_at = row["due_at"], row["overdue_at"]
    return InvoiceView(
        invoice_id=row["invoice_id"], status=row["status"],
        overdue=row["status"] == "open" and (row["fired_at"] is not None or (overdue_at is not None and overdue_at <= now)),
        suspended_for=row["fired_at"] is not None, due_at=utc_iso(due) if due else None,
        due_local=due.astimezone(tz).isoformat() if due else None,
        overdue_at=utc_iso(overdue_at) if overdue_at else None,
        overdue_local=overdue_at.astimezone(tz).isoformat() if overdue_at else None, time_zone=tz.key,
        when_due=shown(due, tz), when_overdue=shown(overdue_at, tz), amount=row["amount"], currency=row["currency"],
        settled_at=utc_iso(row["settled_at"]) if row["settled_at"] else None,
    )


async def publish(producer: AIOKafkaProducer, commands: list[SuspensionCommand]) -> None:
    """Publish a batch and wait for the broker's acknowledgement of all of it."""
    await publish_all(producer, (command_record(command) for command in commands))


async def wait_for_outcomes(
    conn: asyncpg.Connection, command_ids: list[str], timeout_s: float, poll_s: float = 0.1
) -> dict[str, Outcome]:
    """Outcomes (changed / noop / rejected) of the commands, as far as applied within the timeout."""
    return await poll_outcomes(lambda chunk: command_outcomes(conn, chunk), command_ids, timeout_s, poll_s)


class Connections(Protocol):
    """A pool: a connection for the length of an ``async with``."""

    def acquire(self) -> AbstractAsyncContextManager[asyncpg.Connection]: ...


class OneConnection:
    """One open connection as ``Connections`` (the CLI's, which has no pool), lent again for every query."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    @asynccontextmanager
    async def acquire(self) -> AsyncIterator[asyncpg.Connection]:
        yield self._conn


async def wait_for_outcomes_pooled(
    pool: Connections, command_ids: list[str], timeout_s: float, poll_s: float = 0.1,
    keep_going: Callable[[], Awaitable[bool]] | None = None,
) -> dict[str, Outcome]:
    """As ``wait_for_outcomes``, holding a connection of ``pool`` only for each poll's query: a caller that
    waits seconds for the state worker (the API's ``?wait=true``, a bulk job) ties up no connection meanwhile.
    ``keep_going`` is asked between polls; False ends the wait early."""
    async def fetch(chunk: list[str]) -> dict[str, Outcome]:
        try:
            async with pool.acquire() as conn:
                return await command_outcomes(conn, chunk)
        except TimeoutError:  # no connection came free in time: nothing known yet, the next poll asks again
            return {}

    return await poll_outcomes(fetch, command_ids, timeout_s, poll_s, keep_going)


async def poll_outcomes(
    fetch: Callable[[list[str]], Awaitable[dict[str, Outcome]]], command_ids: list[str], timeout_s: float,
    poll_s: float = 0.1, keep_going: Callable[[], Awaitable[bool]] | None = None,
) -> dict[str, Outcome]:
    outcomes: dict[str, Outcome] = {}
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


async def wait_for_command(conn: asyncpg.Connection, command_id: str, timeout_s: float) -> Outcome | None:
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
        elif holds_control_character(customer_id) or holds_control_character(space_id):
            yield MalformedLine(line_number, "customer_id or space_id holds a control character (U+0000 to U+001F)")
        elif note is not None and holds_control_character(note, multi_line=True):
            yield MalformedLine(line_number, "note holds a control character other than tab, line feed and "
                                             "carriage return")
        else:
            yield BulkLine(line_number, customer_id, space_id, note)


# --- bulk runs: the one implementation, for the CLI and the API --------------------------------

Unconfirmed = Literal["unconfirmed"]
UNCONFIRMED: Unconfirmed = "unconfirmed"  # sent, but no outcome known yet: not one of the state worker's
BulkOutcome = Outcome | Unconfirmed
# What processed_commands can hold: a duplicate's outcome is its first delivery's, so never DUPLICATE.
RECORDED_OUTCOMES = (Outcome.CHANGED, Outcome.NOOP, Outcome.REJECTED)


@dataclass
class BulkRun:
    """What a bulk run did with its lines: those sent, with their outcomes, and those not sent, with why."""

    sent: list[tuple[BulkLine, SuspensionCommand]] = field(default_factory=list)
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    malformed: list[MalformedLine] = field(default_factory=list)
    unknown: list[BulkLine] = field(default_factory=list)  # refused by the caller's ``known``: not sent
    unsent: list[BulkLine] = field(default_factory=list)  # not reached: the run was stopped
    stopped: bool = False  # ``keep_going`` said no, before a chunk or while waiting for outcomes

    def outcome(self, command: SuspensionCommand) -> BulkOutcome:
        return self.outcomes.get(command.command_id, UNCONFIRMED)

    def counts(self) -> dict[str, int]:
        """Sent commands per outcome, every recorded outcome and ``unconfirmed`` present (0 or more)."""
        counts = dict.fromkeys([*(str(outcome) for outcome in RECORDED_OUTCOMES), UNCONFIRMED], 0)
        for _, command in self.sent:
            outcome = str(self.outcome(command))
            counts[outcome] = counts.get(outcome, 0) + 1
        return counts


def _well_formed_chunks(lines: Iterable[BulkLine | MalformedLine], size: int,
                        malformed: list[MalformedLine]) -> Iterator[list[BulkLine]]:
    """Chunks of ``size`` well-formed lines, read as they come; malformed lines go to ``malformed``."""
    chunk: list[BulkLine] = []
    for item in lines:
        if isinstance(item, MalformedLine):
            malformed.append(item)
            continue
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


async def run_bulk(
    lines: Iterable[BulkLine | MalformedLine], action: Action, actor: str, missed: MissedInvoices | None, *,
    producer: AIOKafkaProducer, batch_size: int, connections: Connections | None, timeout_s: float,
    poll_s: float = 0.1, known: Callable[[list[BulkLine]], Awaitable[set[str]]] | None = None,
    keep_going: Callable[[], Awaitable[bool]] | None = None, published: Callable[[int], Awaitable[None]] | None = None,
    run: BulkRun | None = None,
) -> BulkRun:
    """Publish the lines' commands chunk by chunk, then wait for their outcomes: the CLI's bulk (a file,
    streamed) and the API's (an upload's job) are both this.

    Per chunk of ``batch_size`` well-formed lines: ``keep_going`` is asked first (False stops the run,
    every line left unsent), ``known`` picks the customers that may be sent (the others are not), the
    chunk's commands are published and acknowledged, and ``published`` is told how many so far. Then,
    given ``connections``, the outcomes are awaited up to ``timeout_s`` (``keep_going`` asked between
    polls); without, none is, and every sent line stays unconfirmed. ``run`` collects as it goes, so a
    caller that passes one still has what was done if this raises."""
    run = run if run is not None else BulkRun()
    chunks = _well_formed_chunks(lines, batch_size, run.malformed)
    for chunk in chunks:
        if keep_going is not None and not await keep_going():
            run.stopped = True
            run.unsent.extend(chunk)
            for rest in chunks:
                run.unsent.extend(rest)
            return run
        allowed = await known(chunk) if known is not None else None
        batch: list[tuple[BulkLine, SuspensionCommand]] = []
        for line in chunk:
            if allowed is None or line.customer_id in allowed:
                batch.append((line, bulk_command(action, line, actor, missed)))
            else:
                run.unknown.append(line)
        await publish(producer, [command for _, command in batch])
        run.sent.extend(batch)
        if published is not None:
            await published(len(run.sent))
    if connections is None or not run.sent:
        return run

    async def still_going(asked: Callable[[], Awaitable[bool]]) -> bool:
        run.stopped = not await asked()
        return not run.stopped

    run.outcomes = await wait_for_outcomes_pooled(
        connections, [command.command_id for _, command in run.sent], timeout_s, poll_s,
        keep_going=None if keep_going is None else functools.partial(still_going, keep_going))
    return run


def bulk_command(
    action: Action, line: BulkLine, actor: str, missed_invoices: MissedInvoices | None
) -> SuspensionCommand:
    return manual_command(action, line.customer_id, line.space_id, actor, line.note, missed_invoices,
                          source=Source.BULK)

