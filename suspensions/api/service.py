"""What operators can do, once, for the API and the console alike: every query scoped by the principal.

Another space's customer answers exactly as a customer that does not exist (NotFound), so a token can
not probe other tenants: reading, and acting too: a suspend or lift (or a bulk line) names a customer
the service knows in the token's space, or nothing is published, since a command for an unknown id
would create that customer (in the token's space) or be rejected (if another space holds it), and
either answer would tell. A role that may not act is Forbidden. The actor of every command is the
principal's, never the request's.

Nothing here holds a PostgreSQL connection while it waits (for the state worker, for a bulk job's
outcomes): a connection is taken per query and given back, so waiting requests do not starve the
others (``capacity``). The console signs in and out through here too: no route, of the API or the
console, takes a connection of the pool itself.

Answers are the API's models (``schemas``), which the console renders as they are.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import asyncpg
from aiokafka import AIOKafkaProducer

from models import Action, CustomerState, MissedInvoices, Source, SuspensionCommand
from suspensions import access, operators, overview, people, queries
from suspensions.access import Principal, Role
from suspensions.api import bulk_jobs
from suspensions.api.capacity import ApiPool, PoolBusy, TooManyBulkJobs
from suspensions.api.schemas import (
    REPORT,
    Amount,
    BulkStatus,
    CountsNow,
    DroppedInvoices,
    DroppedJob,
    GroupLag,
    HistoryEntry,
    InvoiceTotal,
    MalformedReportLine,
    OtherSpaceLine,
    ReasonCount,
    ReportLine,
    SentLine,
    SpaceSummary,
    SummaryDay,
    SummaryTotals,
    UnsentLine,
    summary_key,
)
from suspensions.lag import measure
from suspensions.zones import UTC_ZONE, space_zones
from workers.registry import consumer_groups
from workers.runtime.config import Settings
from workers.runtime.db import invoices
from workers.runtime.db.pool import TRANSIENT_DB_ERRORS
from workers.state.transitions import Outcome

ZONES_TTL_S = 10.0
BULK_BATCH = 1_000
BULK_WAIT_S = 300.0  # how long a job waits for its outcomes once all is published
BULK_INTERRUPTED = ("interrupted: the API process running this job stopped. The commands it published "
                    "(see 'published') are applied; upload the file again for the rest: a customer "
                    "already in the asked state is a no-op.")
BULK_NOT_FOUND = "not found"  # a customer unknown in this space, or of another space: the same words
BULK_REVOKED = ("stopped: the token that started this job was revoked. The commands it published before (see "
                "'published' and the report) are applied; the other lines were not sent.")


class NotFound(Exception):
    """No such customer, bulk job or space, or one of another space: the same answer."""


class Forbidden(Exception):
    def __init__(self, needed: Role) -> None:
        super().__init__(f"this token's role may not do this (needs {needed.name.lower()})")


@dataclass
class Acted:
    command: SuspensionCommand
    outcome: Outcome | None  # None: not waited for, or not applied in time
    state: CustomerState | None


@dataclass
class Operations:
    settings: Settings
    pool: ApiPool
    producer: AIOKafkaProducer
    _zones: dict[str, ZoneInfo] = field(default_factory=dict)
    _zones_at: float = 0.0
    _bulk_tasks: set[asyncio.Task[None]] = field(default_factory=set)

    # --- scope ---------------------------------------------------------------------------------

    @staticmethod
    def visible(principal: Principal, space: str) -> None:
        if not principal.sees(space):
            raise NotFound()

    @staticmethod
    def allowed(principal: Principal, role: Role) -> None:
        if not principal.may(role):
            raise Forbidden(role)

    async def zone(self, space: str) -> ZoneInfo:
        if time.monotonic() - self._zones_at > ZONES_TTL_S:
            self._zones, self._zones_at = await space_zones(self.settings), time.monotonic()
        return self._zones.get(space, UTC_ZONE)

    # --- signing in (tokens for the API, sessions for the console) ------------------------------

    async def principal_for_token(self, token: str) -> Principal | None:
        """The live token's principal, or None (the caller counts and throttles the failure)."""
        async with self.pool.acquire() as conn:
            return await access.principal_for_token(conn, token)

    async def open_session(self, principal: Principal) -> str:
        """A console session for a signed-in principal (its cookie's value); forgets the stale ones first."""
        async with self.pool.acquire() as conn:
            await access.purge_sessions(conn, timedelta(seconds=self.settings.api_session_idle_s))
            cookie, _ = await access.open_session(conn, principal)
        return cookie

    async def session(self, cookie: str) -> tuple[Principal, str] | None:
        """The live session's principal and form token (marked used now), or None."""
        async with self.pool.acquire() as conn:
            return await access.session_principal(conn, cookie, timedelta(seconds=self.settings.api_session_idle_s))

    async def close_session(self, cookie: str) -> None:
        async with self.pool.acquire() as conn:
            await access.close_session(conn, cookie)

    # --- reading -------------------------------------------------------------------------------

    async def customers(self, principal: Principal, space: str, *, suspended: bool | None, after: str = "",
                        search: str = "", reason: str | None = None,
                        limit: int = 100) -> tuple[list[people.Person], str | None]:
        """A page in customer id order (keyset: those after ``after``), with their names; ``search`` is a
        case-insensitive prefix of the id, the name or the email."""
        self.visible(principal, space)
        async with self.pool.acquire() as conn:
            found = await people.people_page(conn, space, search=search, suspended=suspended, reason=reason,
                                             after=after, limit=limit + 1)
        more = len(found) > limit
        found = found[:limit]
        return found, (found[-1].state.customer_id if more and found else None)

    async def people_list(self, principal: Principal, space: str, *, search: str, suspended: bool | None,
                          reason: str | None, scheduled: str | None, sort: people.Sort, offset: int,
                          limit: int) -> tuple[list[people.Person], bool, bool]:
        """A page of the console's list (sorted by name, status, date or id); whether more follow; whether a
        search matched too many to sort (shown names first, then emails, then ids)."""
        self.visible(principal, space)
        async with self.pool.acquire() as conn:
            found = await people.people_page(conn, space, search=search, suspended=suspended, reason=reason,
                                             scheduled=scheduled, sort=sort, offset=offset, limit=limit + 1)
            blocks = await people.in_blocks(conn, space, search)
        return found[:limit], len(found) > limit, blocks

    async def profile(self, principal: Principal, space: str,
                      customer: str) -> tuple[people.Profile | None, list[asyncpg.Record]]:
        """The customer's name and email (personal data: this space's tokens only) and its erasures."""
        self.visible(principal, space)
        async with self.pool.acquire() as conn:
            return await people.profile(conn, space, customer), await people.erasures(conn, space, customer)

    # --- a space at a glance -------------------------------------------------------------------

    async def figures(self, principal: Principal, space: str, day_range: overview.DayRange) -> overview.Figures:
        self.visible(principal, space)
        async with self.pool.acquire() as conn:
            return await overview.figures(conn, space, day_range)

    async def day_range(self, space: str, first: date | None, last: date | None,
                        days: int = overview.DEFAULT_RANGE) -> overview.DayRange:
        """The range asked (days of the space's zone), or the ``days`` ending today; BadRange when wrong."""
        tz = await self.zone(space)
        if first is None and last is None:
            return overview.DayRange.ending_today(days, tz)
        today = datetime.now(UTC).astimezone(tz).date()
        last = last or (min(today, first + timedelta(days=days - 1)) if first else today)
        first = first or last - timedelta(days=days - 1)
        return overview.DayRange.checked(first, last, tz)

    async def summary(self, principal: Principal, space: str, first: date | None, last: date | None) -> SpaceSummary:
        self.visible(principal, space)
        day_range = await self.day_range(space, first, last)
        found = await self.figures(principal, space, day_range)

        def amounts(per_currency: dict[str, overview.Money]) -> list[Amount]:
            return [Amount(currency=currency, jobs=money.jobs, amount=str(money.amount))
                    for currency, money in sorted(per_currency.items())]

        days = []
        for day in day_range.days:
            median, p90 = found.lift_quantiles(day)
            days.append(SummaryDay(
                day=day, suspended_by_reason=found.suspended_by_reason.get(day, {}),
                suspensions=found.suspensions.get(day, 0), lifts=found.lifts.get(day, 0), lift_median_s=median,
                lift_p90_s=p90, dropped=amounts(found.invoices["dropped"].get(day, {})),
                billed=amounts(found.invoices["billed"].get(day, {})),
                waived=amounts(found.invoices["waived"].get(day, {}))))
        median, p90 = found.lift_quantiles()
        return SpaceSummary(
            space_id=space, time_zone=day_range.tz.key, from_day=day_range.first, to_day=day_range.last,
            generated_at=datetime.now(UTC),
            now=CountsNow(suspended=found.suspended_now,
                          by_reason=[ReasonCount(reason=reason, customers=found.suspended_now_by_reason.get(reason, 0))
                                     for reason in found.reasons],
                          scheduled_suspensions=found.scheduled_suspensions, scheduled_lifts=found.scheduled_lifts,
                          dead_letters=found.dead_letters),
            totals=SummaryTotals(suspensions=sum(found.suspensions.values()), lifts=sum(found.lifts.values()),
                                 lift_median_s=median, lift_p90_s=p90,
                                 dropped=amounts(found.invoice_totals("dropped")),
                                 billed=amounts(found.invoice_totals("billed")),
                                 waived=amounts(found.invoice_totals("waived"))),
            days=days)

    async def suspensions(self, principal: Principal, space: str, day_range: overview.DayRange,
                          mode: str = "started", reason: str | None = None,
                          ) -> list[tuple[overview.Suspension, people.Profile | None]]:
        """The suspensions behind a figure (by default those that started in the range), each with its
        invoices and the customer's profile."""
        self.visible(principal, space)
        async with self.pool.acquire() as conn:
            found = await overview.listed(conn, space, day_range, mode, reason)
            profiles = await people.profiles(conn, space, [s.customer_id for s in found])
        return [(suspension, profiles.get(suspension.customer_id)) for suspension in found]

    async def dead_letters(self, principal: Principal, space: str) -> list[asyncpg.Record]:
        self.visible(principal, space)
        async with self.pool.acquire() as conn:
            return await overview.dead_letters(conn, space, datetime.now(UTC) - overview.DEAD_LETTER_WINDOW)

    async def customer(self, principal: Principal, space: str, customer: str) -> CustomerState:
        self.visible(principal, space)
        async with self.pool.acquire() as conn:
            state = await queries.customer_state(conn, customer)
        if state is None or state.space_id != space:
            raise NotFound()
        return state

    async def history(self, principal: Principal, space: str, customer: str) -> list[HistoryEntry]:
        self.visible(principal, space)
        async with self.pool.acquire() as conn:
            rows = await queries.customer_history(conn, customer)
        entries = [HistoryEntry.model_validate(dict(row)) for row in rows if row["space_id"] == space]
        if not entries:
            raise NotFound()
        return entries

    async def dropped(self, principal: Principal, space: str, limit: int = 1000) -> DroppedInvoices:
        self.visible(principal, space)
        statuses = ["dropped", "rebilled", "waived"]
        async with self.pool.acquire() as conn:
            jobs = await queries.invoice_decisions(conn, space_id=space, customer_id=None, statuses=statuses,
                                                   limit=limit)
            totals = await queries.invoice_totals(conn, space_id=space, customer_id=None, statuses=statuses)
        return DroppedInvoices(jobs=[DroppedJob.model_validate(dict(job) | {"amount": str(job["amount"])})
                                     for job in jobs],
                               totals=[InvoiceTotal.model_validate(dict(total) | {"total": str(total["total"])})
                                       for total in totals])

    async def pending_schedules(self, principal: Principal, space: str) -> list[operators.PendingSchedule]:
        self.visible(principal, space)
        tz = await self.zone(space)
        async with self.pool.acquire() as conn:
            rows = await queries.pending_schedules(conn, space)
        return [operators.schedule_view(row, tz) for row in rows]

    async def invoices(self, principal: Principal, space: str, customer: str) -> list[operators.InvoiceView]:
        """The customer's invoices as the overdue rule knows them; a customer the space does not know (no state,
        no invoice) answers 404."""
        self.visible(principal, space)
        tz = await self.zone(space)
        async with self.pool.acquire() as conn:
            rows = await invoices.customer_invoices(conn, space, customer)
            if not rows:
                state = await queries.customer_state(conn, customer)
                if state is None or state.space_id != space:
                    raise NotFound()
        now = datetime.now(UTC)
        return [operators.invoice_view(row, tz, now) for row in rows]

    async def lag(self, principal: Principal) -> list[GroupLag]:
        self.allowed(principal, Role.ADMIN)
        groups: dict[str, tuple[str, ...] | None] = dict(consumer_groups(self.settings))
        return [GroupLag.model_validate(report.as_dict()) for report in await measure(self.settings, groups, 0, 1)]

    # --- acting --------------------------------------------------------------------------------

    async def act(self, principal: Principal, space: str, customer: str, action: Action, *, note: str | None,
                  missed: MissedInvoices | None = None, at: str | None = None, until: str | None = None,
                  source: Source = Source.OPERATOR_API, wait: bool = False, timeout_s: float = 10.0) -> Acted:
        """Publish a suspend or lift (now, or scheduled); raises pydantic's ValidationError or MomentError
        for bad input, before anything is published."""
        self.visible(principal, space)
        self.allowed(principal, Role.OPERATOR)
        moments = operators.schedule_moments(at, until, await self.zone(space)) if at or until else None
        command = operators.manual_command(action, customer, space, principal.actor, note, missed, source=source,
                                           at=moments.at if moments else None,
                                           until=moments.until if moments else None)
        # Checked after the input (whose errors say nothing of who exists) and before anything is sent.
        # Customers are never deleted nor moved between spaces, so the answer still holds at publishing.
        await self.customer(principal, space, customer)
        # Bounded: a broker that does not answer makes a 503 (the command may still arrive: acting again is
        # safe, a suspend or lift already in effect changes nothing).
        async with asyncio.timeout(self.settings.api_dependency_timeout_s):
            await operators.publish(self.producer, [command])
        if not wait:
            return Acted(command, None, None)
        outcome = (await operators.wait_for_outcomes_pooled(self.pool, [command.command_id], timeout_s)).get(
            command.command_id)
        state = None
        if outcome:
            with contextlib.suppress(PoolBusy):  # applied either way: the answer says so, without the state
                async with self.pool.acquire() as conn:
                    state = await queries.customer_state(conn, customer)
        return Acted(command, outcome, state if state is not None and state.space_id == space else None)

    # --- bulk jobs -----------------------------------------------------------------------------

    def _alive_since(self, now: datetime) -> datetime:
        """A running job not marked alive since this moment has lost its process."""
        return now - timedelta(seconds=3 * self.settings.api_bulk_heartbeat_s)

    async def may_start_bulk(self, principal: Principal, space: str) -> None:
        """What ``start_bulk`` would refuse, asked before the upload is read (NotFound, Forbidden,
        TooManyBulkJobs), so a refused upload costs no reading. Without the lock: ``start_bulk``'s check
        is the one that holds."""
        self.visible(principal, space)
        self.allowed(principal, Role.OPERATOR)
        async with self.pool.acquire() as conn:
            await self._check_running_jobs(conn, principal)

    async def _check_running_jobs(self, conn: asyncpg.Connection, principal: Principal) -> None:
        limit = self.settings.api_max_bulk_jobs_per_token
        if await bulk_jobs.running(conn, principal.actor, self._alive_since(datetime.now(UTC))) >= limit:
            raise TooManyBulkJobs(limit)

    async def start_bulk(self, principal: Principal, space: str, action: Action, text: str,
                         missed: MissedInvoices | None) -> str:
        """Record the job, then read, publish and confirm it in the background; progress is in PostgreSQL.

        A token runs at most ``api_max_bulk_jobs_per_token`` jobs at once, on every API process together
        (TooManyBulkJobs beyond): counted and recorded under one lock per token, so two uploads at the
        same moment cannot both slip under the limit. A job whose process died (unmarked) counts no more."""
        self.visible(principal, space)
        self.allowed(principal, Role.OPERATOR)
        bulk_id = uuid.uuid4().hex
        async with self.pool.acquire() as conn, conn.transaction():
            await bulk_jobs.lock_actor(conn, principal.actor)
            await self._check_running_jobs(conn, principal)
            await bulk_jobs.record(conn, bulk_id, space, action.value, principal.actor, datetime.now(UTC))
        task = asyncio.create_task(self._run_bulk(bulk_id, principal, space, action, text, missed))
        self._bulk_tasks.add(task)
        task.add_done_callback(self._bulk_tasks.discard)
        return bulk_id

    async def _run_bulk(self, bulk_id: str, principal: Principal, space: str, action: Action, text: str,
                        missed: MissedInvoices | None) -> None:
        alive = asyncio.create_task(self._keep_alive(bulk_id))
        try:
            await self._apply_bulk(bulk_id, principal, space, action, text, missed)
        finally:
            alive.cancel()

    async def _keep_alive(self, bulk_id: str) -> None:
        """Mark the job alive while this process runs it (a lost mark is only a late one)."""
        while True:
            await asyncio.sleep(self.settings.api_bulk_heartbeat_s)
            with contextlib.suppress(*TRANSIENT_DB_ERRORS):  # PoolBusy among them: a late mark only
                async with self.pool.acquire() as conn:
                    await bulk_jobs.mark_alive(conn, bulk_id, datetime.now(UTC))

    async def _apply_bulk(self, bulk_id: str, principal: Principal, space: str, action: Action, text: str,
                          missed: MissedInvoices | None) -> None:
        """The lines of this space go to ``operators.run_bulk``, chunk by chunk: is the token still live,
        which of the chunk's customers exist here, publish those. A revoked token stops the job between
        chunks (and while it waits for outcomes), with what it sent."""
        report: list[ReportLine] = []
        run = operators.BulkRun()
        patient = self.pool.patient()
        try:
            lines = list(operators.read_bulk_lines(io.StringIO(text)))
            wanted: list[operators.BulkLine] = []
            for item in lines:
                if isinstance(item, operators.MalformedLine):
                    report.append(MalformedReportLine(line=item.line_number, error=item.error))
                elif item.space_id != space:
                    report.append(OtherSpaceLine(line=item.line_number, customer_id=item.customer_id,
                                                 error=f"space_id {item.space_id!r} is not this space ({space})"))
                else:
                    wanted.append(item)
            await self._progress(bulk_id, lines=len(lines), published=0)

            async def known(chunk: list[operators.BulkLine]) -> set[str]:
                async with patient.acquire() as conn:
                    return await queries.known_customers(conn, space, [line.customer_id for line in chunk])

            async def published(count: int) -> None:
                await self._progress(bulk_id, lines=len(lines), published=count)

            await operators.run_bulk(wanted, action, principal.actor, missed, producer=self.producer,
                                     batch_size=BULK_BATCH, connections=patient, timeout_s=BULK_WAIT_S, poll_s=0.2,
                                     known=known, keep_going=lambda: self._token_live(principal),
                                     published=published, run=run)
            report.extend(self._unsent_entries(run))
            report.extend(SentLine(line=line.line_number, customer_id=command.customer_id,
                                   command_id=command.command_id, outcome=run.outcome(command))
                          for line, command in run.sent)
            if run.stopped:  # its token was revoked: what it published (with the outcomes known), the rest unsent
                await self._finish(bulk_id, "failed", report, len(lines), len(run.sent), BULK_REVOKED)
            else:
                await self._finish(bulk_id, "done", report, len(lines), len(run.sent), None)
        except Exception as error:  # the job says it failed, with what it managed
            report.extend(self._unsent_entries(run))
            await self._finish(bulk_id, "failed", report, 0, len(run.sent), f"{type(error).__name__}: {error}")
            raise

    @staticmethod
    def _unsent_entries(run: operators.BulkRun) -> list[ReportLine]:
        return [*(UnsentLine(line=line.line_number, customer_id=line.customer_id, error=BULK_NOT_FOUND,
                             problem="not found") for line in run.unknown),
                *(UnsentLine(line=line.line_number, customer_id=line.customer_id, error="not sent: token revoked",
                             problem="not sent") for line in run.unsent)]

    async def _token_live(self, principal: Principal) -> bool:
        async with self.pool.patient().acquire() as conn:
            return await access.token_is_live(conn, principal.name)

    async def _progress(self, bulk_id: str, *, lines: int, published: int) -> None:
        async with self.pool.patient().acquire() as conn:
            await bulk_jobs.progress(conn, bulk_id, lines, published, datetime.now(UTC))

    async def _finish(self, bulk_id: str, status: str, report: list[ReportLine], lines: int, published: int,
                      error: str | None) -> None:
        report.sort(key=lambda entry: entry.line)
        async with self.pool.patient().acquire() as conn:
            await bulk_jobs.finish(conn, bulk_id, status, REPORT.dump_json(report).decode(), lines, published, error,
                                   datetime.now(UTC))

    async def bulk(self, principal: Principal, space: str, bulk_id: str) -> BulkStatus:
        self.visible(principal, space)
        now = datetime.now(UTC)
        async with self.pool.acquire() as conn:
            # A job whose process stopped marking it alive (it died, or was stopped) is over.
            await bulk_jobs.end_if_abandoned(conn, bulk_id, space, BULK_INTERRUPTED, now, self._alive_since(now))
            row = await bulk_jobs.job(conn, bulk_id, space)
        if row is None:
            raise NotFound()
        job = dict(row)
        report = REPORT.validate_json(job["report"]) if job["report"] else None
        summary: dict[str, int] = {}
        for entry in report or []:
            summary[summary_key(entry)] = summary.get(summary_key(entry), 0) + 1
        return BulkStatus.model_validate(job | {"report": report, "summary": summary})
