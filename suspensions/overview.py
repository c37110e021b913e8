"""A space at a glance (issue 26): counts now, and figures per day over a range, read from PostgreSQL.

Days are the space's own (its time zone from ``settings.spaces``, UTC where none is set): a day runs from
local midnight to the next. Everything is computed from what the service already records:

- **suspensions** are read from history (``command_history``): per customer, the commands that changed its
  state now (not those that only scheduled), split at each lift. A suspension starts at its first
  ``suspend`` and ends at the ``lift`` after it; each reason counts from the first command that added it.
- **invoices** from ``invoice_decisions``: a job dropped on the day it was decided (those later billed back
  or waived included), billed back or waived on the day it was settled. Amounts are summed per currency,
  never across currencies.
- **dead letters** from ``dead_letters`` (the directory worker's), counted for the space their record names.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import asyncpg

from models import Reason

MAX_RANGE_DAYS = 366
RANGES = (7, 30, 90, 365)  # what the console offers
DEFAULT_RANGE = 30
SCHEDULE_HORIZON = timedelta(days=7)
DEAD_LETTER_WINDOW = timedelta(hours=24)
INVOICE_KINDS = ("dropped", "billed", "waived")


class BadRange(ValueError):
    """A range that is not from <= to, or longer than MAX_RANGE_DAYS."""


@dataclass(frozen=True)
class DayRange:
    first: date  # inclusive, in the space's zone
    last: date  # inclusive
    tz: ZoneInfo

    @classmethod
    def checked(cls, first: date, last: date, tz: ZoneInfo) -> DayRange:
        if last < first:
            raise BadRange("`from` is after `to`")
        if (last - first).days + 1 > MAX_RANGE_DAYS:
            raise BadRange(f"a range is at most {MAX_RANGE_DAYS} days")
        return cls(first, last, tz)

    @classmethod
    def ending_today(cls, days: int, tz: ZoneInfo, now: datetime | None = None) -> DayRange:
        today = (now or datetime.now(UTC)).astimezone(tz).date()
        return cls.checked(today - timedelta(days=days - 1), today, tz)

    @property
    def days(self) -> list[date]:
        return [self.first + timedelta(days=offset) for offset in range((self.last - self.first).days + 1)]

    def start_of(self, day: date) -> datetime:
        """Local midnight of ``day`` (a midnight that does not exist is the first moment after it), in UTC."""
        return datetime.combine(day, time(), self.tz).astimezone(UTC)

    @property
    def start(self) -> datetime:
        return self.start_of(self.first)

    @property
    def end(self) -> datetime:
        """The first moment after the range."""
        return self.start_of(self.last + timedelta(days=1))

    def day_of(self, moment: datetime) -> date:
        return moment.astimezone(self.tz).date()


@dataclass
class Suspension:
    """One suspension of one customer: from its first ``suspend`` to the ``lift`` that ended it."""

    customer_id: str
    suspended_at: datetime
    lifted_at: datetime | None
    reasons: list[tuple[str, datetime]]  # each reason and when it was first added, in order
    suspended_by: str
    lifted_by: str | None
    notes: list[str]
    missed_invoices: str | None
    invoices: dict[str, dict[str, tuple[int, Decimal]]] = field(default_factory=dict)  # kind -> currency -> n, sum

    @property
    def reason_names(self) -> list[str]:
        return [reason for reason, _ in self.reasons]


@dataclass
class Money:
    jobs: int = 0
    amount: Decimal = Decimal(0)


@dataclass
class Figures:
    """Everything the overview shows: counts now and, per day of the range, the figures."""

    range: DayRange
    suspended_now: int
    suspended_now_by_reason: dict[str, int]
    scheduled_suspensions: int
    scheduled_lifts: int
    dead_letters: int
    reasons: list[str]  # every reason in the figures, in a stable order
    suspended_by_reason: dict[date, dict[str, int]]  # at the end of each day (now, for today)
    suspensions: dict[date, int]
    lifts: dict[date, int]
    lift_seconds: dict[date, list[float]]  # durations of the suspensions lifted that day
    invoices: dict[str, dict[date, dict[str, Money]]]  # kind -> day -> currency -> jobs, amount
    currencies: list[str]

    def lift_quantiles(self, day: date | None = None) -> tuple[float | None, float | None]:
        """Median and 90th percentile of the suspension's duration (seconds) for those lifted that day, or over
        the whole range."""
        values = self.lift_seconds.get(day, []) if day else [v for vs in self.lift_seconds.values() for v in vs]
        return quantile(values, 0.5), quantile(values, 0.9)

    def invoice_totals(self, kind: str) -> dict[str, Money]:
        totals: dict[str, Money] = {}
        for per_currency in self.invoices[kind].values():
            for currency, money in per_currency.items():
                total = totals.setdefault(currency, Money())
                total.jobs += money.jobs
                total.amount += money.amount
        return dict(sorted(totals.items()))


def quantile(values: Sequence[float], q: float) -> float | None:
    """The nearest-rank quantile (the smallest value with at least ``q`` of them at or below it)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


KNOWN_REASONS = tuple(reason.value for reason in Reason)  # always shown, in the contract's order

# Per customer, the history rows that changed its state now (a command with `at` only scheduled), numbered by
# the lifts before them: a suspension is the rows of one number with a `suspend` among them. A lift is a `lift`,
# or a `release` of the last reason (the overdue rule's, when paid).
SUSPENSIONS_SQL = """
WITH changes AS (
    SELECT id, customer_id, action, reason, actor, note, missed_invoices, applied_at,
           (action = 'lift' OR (action = 'release' AND suspended_after IS FALSE)) AS lifts
    FROM command_history
    WHERE space_id = $1 AND outcome = 'changed' AND scheduled_at IS NULL AND action IN ('suspend', 'lift', 'release')
), numbered AS (
    SELECT *, count(*) FILTER (WHERE lifts) OVER (
               PARTITION BY customer_id ORDER BY id ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS lifts_before
    FROM changes
), suspensions AS (
    SELECT customer_id,
           min(applied_at) FILTER (WHERE action = 'suspend') AS suspended_at,
           min(applied_at) FILTER (WHERE lifts) AS lifted_at,
           array_agg(reason ORDER BY id) FILTER (WHERE action = 'suspend') AS reasons,
           array_agg(applied_at ORDER BY id) FILTER (WHERE action = 'suspend') AS reasons_at,
           (array_agg(actor ORDER BY id) FILTER (WHERE action = 'suspend'))[1] AS suspended_by,
           (array_agg(actor ORDER BY id) FILTER (WHERE lifts))[1] AS lifted_by,
           (array_agg(missed_invoices ORDER BY id) FILTER (WHERE lifts))[1] AS missed_invoices,
           array_agg(note ORDER BY id) FILTER (WHERE note IS NOT NULL) AS notes
    FROM numbered GROUP BY customer_id, lifts_before
    HAVING bool_or(action = 'suspend')
)
SELECT * FROM suspensions
WHERE suspended_at < $3 AND (lifted_at IS NULL OR lifted_at >= $2)
ORDER BY suspended_at, customer_id
"""

# Dropped on the day decided (whatever became of it since), billed back or waived on the day settled.
INVOICES_SQL = """
SELECT 'dropped' AS kind, decided_at AS at, currency, amount FROM invoice_decisions
WHERE space_id = $1 AND status IN ('dropped', 'rebilled', 'waived') AND decided_at >= $2 AND decided_at < $3
UNION ALL
SELECT CASE status WHEN 'rebilled' THEN 'billed' ELSE 'waived' END, settled_at, currency, amount
FROM invoice_decisions
WHERE space_id = $1 AND status IN ('rebilled', 'waived') AND settled_at >= $2 AND settled_at < $3
"""

# The invoice jobs dropped during each suspension of these customers (decided between its start and its lift).
SUSPENSION_INVOICES_SQL = """
SELECT customer_id, status, currency, decided_at, amount FROM invoice_decisions
WHERE space_id = $1 AND customer_id = ANY($2::text[]) AND status IN ('dropped', 'rebilled', 'waived')
ORDER BY customer_id, decided_at
"""


def _suspension(row: asyncpg.Record) -> Suspension:
    first_added: dict[str, datetime] = {}
    for reason, at in zip(row["reasons"], row["reasons_at"], strict=True):
        first_added.setdefault(reason, at)
    return Suspension(row["customer_id"], row["suspended_at"], row["lifted_at"], list(first_added.items()),
                      row["suspended_by"], row["lifted_by"], list(row["notes"] or []), row["missed_invoices"])


# Customers suspended now whose suspension history no longer holds (history past its retention, or rows
# written without it): their suspension is read from the state, from its `suspended_at`.
SUSPENDED_NOW_SQL = """
SELECT customer_id, reasons, suspended_at FROM customer_state
WHERE space_id = $1 AND suspended AND suspended_at < $2
"""


async def suspensions(conn: asyncpg.Connection, space: str, start: datetime, end: datetime) -> list[Suspension]:
    """The space's suspensions that were in force at some moment of [start, end), oldest first."""
    found = [_suspension(row) for row in await conn.fetch(SUSPENSIONS_SQL, space, start, end)]
    open_ones = {s.customer_id for s in found if s.lifted_at is None}
    for row in await conn.fetch(SUSPENDED_NOW_SQL, space, end):
        if row["customer_id"] not in open_ones:
            found.append(Suspension(row["customer_id"], row["suspended_at"], None,
                                    [(reason, row["suspended_at"]) for reason in row["reasons"]], "", None, [], None))
    return sorted(found, key=lambda s: (s.suspended_at, s.customer_id))


async def with_invoices(conn: asyncpg.Connection, space: str, found: list[Suspension]) -> list[Suspension]:
    """Each suspension with the invoice jobs dropped during it: dropped (all), billed back, waived."""
    rows = await conn.fetch(SUSPENSION_INVOICES_SQL, space, sorted({s.customer_id for s in found}))
    jobs: dict[str, list[asyncpg.Record]] = defaultdict(list)
    for row in rows:
        jobs[row["customer_id"]].append(row)
    for suspension in found:
        for job in jobs.get(suspension.customer_id, []):
            if job["decided_at"] < suspension.suspended_at or (
                    suspension.lifted_at is not None and job["decided_at"] > suspension.lifted_at):
                continue
            kinds = ["dropped"] + {"rebilled": ["billed"], "waived": ["waived"]}.get(job["status"], [])
            for kind in kinds:
                count, total = suspension.invoices.setdefault(kind, {}).get(job["currency"], (0, Decimal(0)))
                suspension.invoices[kind][job["currency"]] = (count + 1, total + job["amount"])
    return found


def ordered_reasons(seen: set[str]) -> list[str]:
    """Every reason of the contract, then any other one seen in history, in a stable order."""
    return [*KNOWN_REASONS, *sorted(seen - set(KNOWN_REASONS))]


def suspended_per_day(found: Sequence[Suspension], day_range: DayRange) -> dict[date, dict[str, int]]:
    """Customers suspended for each reason at the end of each day (a reason counts from when it was added
    until the lift)."""
    bounds = [day_range.start_of(day + timedelta(days=1)) for day in day_range.days]
    counts: dict[date, Counter[str]] = {day: Counter() for day in day_range.days}
    for suspension in found:
        for reason, added in suspension.reasons:
            # The days whose end falls in [added, lifted): bounds are increasing, so a slice.
            first = bisect_left(bounds, added)
            last = len(bounds) if suspension.lifted_at is None else bisect_left(bounds, suspension.lifted_at)
            for index in range(first, last):
                counts[day_range.days[index]][reason] += 1
    return {day: dict(counter) for day, counter in counts.items()}


async def figures(conn: asyncpg.Connection, space: str, day_range: DayRange,
                  now: datetime | None = None) -> Figures:
    moment = now or datetime.now(UTC)
    by_reason = {row["reason"]: row["customers"] for row in await conn.fetch(
        "SELECT reason, count(*) AS customers FROM customer_state, unnest(reasons) AS reason "
        "WHERE space_id = $1 AND suspended GROUP BY reason", space)}
    suspended_now = await conn.fetchval(
        "SELECT count(*) FROM customer_state WHERE space_id = $1 AND suspended", space)
    scheduled = {row["action"]: row["n"] for row in await conn.fetch(
        "SELECT action, count(*) AS n FROM schedules WHERE space_id = $1 AND status = 'pending' AND at < $2 "
        "GROUP BY action", space, moment + SCHEDULE_HORIZON)}
    dead_letters = await conn.fetchval(
        "SELECT count(*) FROM dead_letters WHERE space_id = $1 AND failed_at >= $2", space,
        moment - DEAD_LETTER_WINDOW)
    found = await suspensions(conn, space, day_range.start, day_range.end)
    suspensions_per_day: Counter[date] = Counter()
    lifts_per_day: Counter[date] = Counter()
    lift_seconds: dict[date, list[float]] = defaultdict(list)
    for suspension in found:
        if suspension.suspended_at >= day_range.start:
            suspensions_per_day[day_range.day_of(suspension.suspended_at)] += 1
        if suspension.lifted_at is not None and day_range.start <= suspension.lifted_at < day_range.end:
            day = day_range.day_of(suspension.lifted_at)
            lifts_per_day[day] += 1
            lift_seconds[day].append((suspension.lifted_at - suspension.suspended_at).total_seconds())
    invoices: dict[str, dict[date, dict[str, Money]]] = {kind: {} for kind in INVOICE_KINDS}
    currencies: set[str] = set()
    for row in await conn.fetch(INVOICES_SQL, space, day_range.start, day_range.end):
        money = invoices[row["kind"]].setdefault(day_range.day_of(row["at"]), {}).setdefault(row["currency"], Money())
        money.jobs += 1
        money.amount += row["amount"]
        currencies.add(row["currency"])
    per_day = suspended_per_day(found, day_range)
    seen = set(by_reason) | {reason for counts in per_day.values() for reason in counts}
    return Figures(day_range, suspended_now, by_reason, scheduled.get("suspend", 0), scheduled.get("lift", 0),
                   dead_letters, ordered_reasons(seen), per_day, dict(suspensions_per_day), dict(lifts_per_day),
                   dict(lift_seconds), invoices, sorted(currencies))


LIST_MODES = ("started", "lifted", "in_force")


def chosen(found: Sequence[Suspension], day_range: DayRange, mode: str = "started",
           reason: str | None = None) -> list[Suspension]:
    """The suspensions behind a figure: those that ``started`` in the range, were ``lifted`` in it, or were
    ``in_force`` at its end (now, for a range ending today), as the chart of suspended customers counts them;
    with ``reason``, only those with it (in force: with it at the end)."""
    end = day_range.end
    picked = []
    for suspension in found:
        added = dict(suspension.reasons)
        if reason is not None and reason not in added:
            continue
        if mode == "lifted":
            keep = suspension.lifted_at is not None and day_range.start <= suspension.lifted_at < end
        elif mode == "in_force":
            since = added[reason] if reason is not None else suspension.suspended_at
            keep = since <= end and (suspension.lifted_at is None or suspension.lifted_at > end)
        else:
            keep = day_range.start <= suspension.suspended_at < end
        if keep:
            picked.append(suspension)
    return picked


async def listed(conn: asyncpg.Connection, space: str, day_range: DayRange, mode: str = "started",
                 reason: str | None = None) -> list[Suspension]:
    """The suspensions behind a figure (``chosen``), with their invoices: the list's and the export's rows."""
    found = chosen(await suspensions(conn, space, day_range.start, day_range.end), day_range, mode, reason)
    return await with_invoices(conn, space, found)


async def dead_letters(conn: asyncpg.Connection, space: str, since: datetime, limit: int = 500) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(
        "SELECT record_id, source_topic, worker, error, failed_at FROM dead_letters "
        "WHERE space_id = $1 AND failed_at >= $2 ORDER BY failed_at DESC LIMIT $3", space, since, limit)
    return rows
