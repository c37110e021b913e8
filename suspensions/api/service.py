"""What operators can do, once, for the API and the console alike: every query scoped by the principal.

Another space's customer answers exactly as a customer that does not exist (NotFound), so a token can
not probe other tenants: reading, and acting too: a suspend or lift (or a bulk line) names a customer
the service knows in the token's space, or nothing is published, since a command for an unknown id
would create that customer (in the token's space) or be rejected (if another space holds it), and
either answer would tell. A role that may not act is Forbidden. The actor of every command is the
principal's, never the request's.

Nothing here holds a PostgreSQL connection while it waits (for the state worker, for a bulk job's
outcomes): a connection is taken per query and given back, so waiting requests do not starve the
others (``capacity``).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import orjson
from aiokafka import AIOKafkaProducer

from models import Action, CustomerState, MissedInvoices, Source, SuspensionCommand
from suspensions import access, operators, queries
from suspensions.access import Principal, Role
from suspensions.api.capacity import ApiPool, PoolBusy, TooManyBulkJobs
from suspensions.lag import measure
from suspensions.zones import UTC_ZONE, space_zones
from workers.registry import consumer_groups
from workers.runtime.config import Settings
from workers.runtime.db.pool import TRANSIENT_DB_ERRORS

ZONES_TTL_S = 10.0
BULK_BATCH = 1_000
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
    outcome: str | None  # None: not waited for, or not applied in time
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

    # --- reading -------------------------------------------------------------------------------

    async def customers(self, principal: Principal, space: str, *, suspended: bool | None, after: str = "",
                        search: str = "", limit: int = 100) -> tuple[list[CustomerState], str | None]:
        self.visible(principal, space)
        async with self.pool.acquire() as conn:
            states = await queries.space_states_page(conn, space, suspended=suspended, after=after, search=search,
                                                     limit=limit + 1)
        more = len(states) > limit
        states = states[:limit]
        return states, (states[-1].customer_id if more and states else None)

    async def customer(self, principal: Principal, space: str, customer: str) -> CustomerState:
        self.visible(principal, space)
        async with self.pool.acquire() as conn:
            state = await queries.customer_state(conn, customer)
        if state is None or state.space_id != space:
            raise NotFound()
        return state

    async def history(self, principal: Principal, space: str, customer: str) -> list[dict[str, Any]]:
        self.visible(principal, space)
        async with self.pool.acquire() as conn:
            rows = await queries.customer_history(conn, customer)
        entries = [dict(row) for row in rows if row["space_id"] == space]
        if not entries:
            raise NotFound()
        return entries

    async def dropped(self, principal: Principal, space: str, limit: int = 1000) -> dict[str, Any]:
        self.visible(principal, space)
        statuses = ["dropped", "rebilled", "waived"]
        async with self.pool.acquire() as conn:
            jobs = await queries.invoice_decisions(conn, space_id=space, customer_id=None, statuses=statuses,
                                                   limit=limit)
            totals = await queries.invoice_totals(conn, space_id=space, customer_id=None, statuses=statuses)
        return {"jobs": [dict(job) | {"amount": str(job["amount"])} for job in jobs],
                "totals": [dict(total) | {"total": str(total["total"])} for total in totals]}

    async def pending_schedules(self, principal: Principal, space: str) -> list[dict[str, object]]:
        self.visible(principal, space)
        tz = await self.zone(space)
        async with self.pool.acquire() as conn:
            rows = await queries.pending_schedules(conn, space)
        return [operators.schedule_view(row, tz) for row in rows]

    async def lag(self, principal: Principal) -> list[dict[str, object]]:
        self.allowed(principal, Role.ADMIN)
        groups: dict[str, tuple[str, ...] | None] = dict(consumer_groups(self.settings))
        return [report.as_dict() for report in await measure(self.settings, groups, 0, 1)]

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
        running = await conn.fetchval(
            "SELECT count(*) FROM bulk_jobs WHERE actor = $1 AND status = 'running' AND updated_at >= $2",
            principal.actor, datetime.now(UTC) - timedelta(seconds=3 * self.settings.api_bulk_heartbeat_s))
        if running >= limit:
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
        now = datetime.now(UTC)
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", f"bulk_jobs:{principal.actor}")
            await self._check_running_jobs(conn, principal)
            await conn.execute(
                "INSERT INTO bulk_jobs (bulk_id, space_id, action, actor, status, created_at, updated_at) "
                "VALUES ($1, $2, $3, $4, 'running', $5, $5)", bulk_id, space, action.value, principal.actor, now)
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
                    await conn.execute("UPDATE bulk_jobs SET updated_at = $2 WHERE bulk_id = $1 AND status = 'running'",
                                       bulk_id, datetime.now(UTC))

    async def _apply_bulk(self, bulk_id: str, principal: Principal, space: str, action: Action, text: str,
                          missed: MissedInvoices | None) -> None:
        """Chunk by chunk: is the token still live, which of the chunk's customers exist here, publish those.
        A revoked token stops the job between chunks (and while it waits for outcomes), with what it sent."""
        report: list[dict[str, object]] = []
        sent: list[tuple[int, SuspensionCommand]] = []
        patient = self.pool.patient()
        try:
            lines = list(operators.read_bulk_lines(io.StringIO(text)))
            wanted: list[operators.BulkLine] = []
            for item in lines:
                if isinstance(item, operators.MalformedLine):
                    report.append({"line": item.line_number, "error": item.error})
                elif item.space_id != space:
                    report.append({"line": item.line_number, "customer_id": item.customer_id,
                                   "error": f"space_id {item.space_id!r} is not this space ({space})"})
                else:
                    wanted.append(item)
            await self._progress(bulk_id, lines=len(lines), published=0)
            for start in range(0, len(wanted), BULK_BATCH):
                chunk = wanted[start:start + BULK_BATCH]
                if not await self._token_live(principal):
                    await self._stop(bulk_id, report, sent, {}, wanted[start:], len(lines))
                    return
                async with patient.acquire() as conn:
                    known = await queries.known_customers(conn, space, [line.customer_id for line in chunk])
                batch = []
                for line in chunk:
                    if line.customer_id in known:
                        batch.append((line.line_number, operators.bulk_command(action, line, principal.actor, missed)))
                    else:
                        report.append({"line": line.line_number, "customer_id": line.customer_id,
                                       "error": BULK_NOT_FOUND, "problem": BULK_NOT_FOUND})
                await operators.publish(self.producer, [command for _, command in batch])
                sent.extend(batch)
                await self._progress(bulk_id, lines=len(lines), published=len(sent))
            revoked = False

            async def live() -> bool:
                nonlocal revoked
                revoked = not await self._token_live(principal)
                return not revoked

            outcomes = await operators.wait_for_outcomes_pooled(patient, [c.command_id for _, c in sent], 300,
                                                                poll_s=0.2, keep_going=live)
            if revoked:
                await self._stop(bulk_id, report, sent, outcomes, [], len(lines))
                return
            report.extend(self._sent_entries(sent, outcomes))
            report.sort(key=lambda entry: int(str(entry["line"])))
            await self._finish(bulk_id, "done", report, len(lines), len(sent), None)
        except Exception as error:  # the job says it failed, with what it managed
            await self._finish(bulk_id, "failed", report, 0, len(sent), f"{type(error).__name__}: {error}")
            raise

    @staticmethod
    def _sent_entries(sent: list[tuple[int, SuspensionCommand]], outcomes: dict[str, str]) -> list[dict[str, object]]:
        return [{"line": line, "customer_id": command.customer_id, "command_id": command.command_id,
                 "outcome": outcomes.get(command.command_id, "unconfirmed")} for line, command in sent]

    async def _token_live(self, principal: Principal) -> bool:
        async with self.pool.patient().acquire() as conn:
            return await access.token_is_live(conn, principal.name)

    async def _stop(self, bulk_id: str, report: list[dict[str, object]], sent: list[tuple[int, SuspensionCommand]],
                    outcomes: dict[str, str], unsent: list[operators.BulkLine], lines: int) -> None:
        """The job ends as its token was revoked: what it published (with the outcomes known), and every
        line it did not send."""
        report.extend(self._sent_entries(sent, outcomes))
        report.extend({"line": line.line_number, "customer_id": line.customer_id, "error": "not sent: token revoked",
                       "problem": "not sent"} for line in unsent)
        report.sort(key=lambda entry: int(str(entry["line"])))
        await self._finish(bulk_id, "failed", report, lines, len(sent), BULK_REVOKED)

    async def _progress(self, bulk_id: str, *, lines: int, published: int) -> None:
        async with self.pool.patient().acquire() as conn:
            await conn.execute("UPDATE bulk_jobs SET lines = $2, published = $3, updated_at = $4 WHERE bulk_id = $1",
                               bulk_id, lines, published, datetime.now(UTC))

    async def _finish(self, bulk_id: str, status: str, report: list[dict[str, object]], lines: int, published: int,
                      error: str | None) -> None:
        async with self.pool.patient().acquire() as conn:
            await conn.execute(
                "UPDATE bulk_jobs SET status = $2, report = $3::jsonb, lines = greatest(lines, $4), "
                "published = greatest(published, $5), error = $6, updated_at = $7 WHERE bulk_id = $1",
                bulk_id, status, orjson.dumps(report).decode(), lines, published, error, datetime.now(UTC))

    async def bulk(self, principal: Principal, space: str, bulk_id: str) -> dict[str, Any]:
        self.visible(principal, space)
        now = datetime.now(UTC)
        async with self.pool.acquire() as conn:
            # A job whose process stopped marking it alive (it died, or was stopped) is over.
            await conn.execute(
                "UPDATE bulk_jobs SET status = 'failed', error = $3, updated_at = $4 "
                "WHERE bulk_id = $1 AND space_id = $2 AND status = 'running' AND updated_at < $5",
                bulk_id, space, BULK_INTERRUPTED, now, now - timedelta(seconds=3 * self.settings.api_bulk_heartbeat_s))
            row = await conn.fetchrow("SELECT * FROM bulk_jobs WHERE bulk_id = $1 AND space_id = $2", bulk_id, space)
        if row is None:
            raise NotFound()
        job = dict(row)
        report = orjson.loads(job.pop("report")) if job["report"] else None
        summary: dict[str, int] = {}
        for entry in report or []:
            key = str(entry.get("outcome") or entry.get("problem") or "malformed")
            summary[key] = summary.get(key, 0) + 1
        return job | {"report": report, "summary": summary}
