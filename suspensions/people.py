"""Customers by name (issue 26): the directory's profiles beside their state, search, and erasure.

Names and emails are personal data: read only through the service layer, scoped by the principal's space,
and never logged. A profile is shown with a customer only when both are of the same space.

Search is a case-insensitive prefix of the id, the name or the email, each through an index of its own
(``lower(...) text_pattern_ops``): the bounds of the prefix are given as ``~>=~``/``~<~`` comparisons,
which a prepared statement's generic plan can use, and ``LIKE`` keeps the match exact.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

import asyncpg

from models import CustomerState
from workers.runtime.db.repository import STATE_COLUMNS, state_from_row

Sort = Literal["name", "status", "date", "id"]
SORTS: dict[str, str] = {
    "name": "lower(p.display_name) NULLS LAST, s.customer_id",
    "status": "s.suspended DESC, s.customer_id",
    "date": "s.updated_at DESC, s.customer_id",
    "id": "s.customer_id",
}
# Above every character a prefix can be followed by (U+10FFFF's UTF-8 is the largest).
_TOP = "\U0010ffff"


@dataclass(frozen=True)
class Profile:
    display_name: str | None
    email: str | None
    updated_at: datetime | None
    forgotten_at: datetime | None
    forgotten_by: str | None


@dataclass(frozen=True)
class Person:
    state: CustomerState
    display_name: str | None
    email: str | None


def like_prefix(text: str) -> str:
    """A LIKE pattern matching what starts with ``text`` (its wildcards taken literally)."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


_STATE = ", ".join(f"s.{column}" for column in STATE_COLUMNS.split(", "))


# A prefix that more customers than this match (in any one of id, name, email) is walked in the list's order
# instead of gathered and sorted: a short prefix ("m") can match most of a space.
SELECTIVE = 1_000


class _Query:
    """Positional parameters as a statement is written."""

    def __init__(self) -> None:
        self.args: list[object] = []

    def __call__(self, value: object) -> str:
        self.args.append(value)
        return f"${len(self.args)}"


@dataclass(frozen=True)
class _Asked:
    space: str
    prefix: str
    suspended: bool | None
    reason: str | None
    scheduled: str | None  # an action: those with one pending within SCHEDULED_WITHIN

    def filters(self, q: _Query) -> str:
        """The list's filters, on the state ``s``."""
        parts = [f"s.space_id = {q(self.space)}"]
        if self.suspended is not None:
            parts.append(f"s.suspended = {q(self.suspended)}")
        if self.reason is not None:
            parts.append(f"{q(self.reason)} = ANY(s.reasons)")
        if self.scheduled is not None:
            parts.append(f"EXISTS (SELECT 1 FROM schedules sc WHERE sc.space_id = s.space_id "
                         f"AND sc.customer_id = s.customer_id AND sc.status = 'pending' "
                         f"AND sc.action = {q(self.scheduled)} AND sc.at < now() + interval '7 days')")
        return " AND ".join(parts)

    def matches(self, q: _Query) -> str:
        """The prefix as a filter of the rows walked (``s`` and its profile ``p``)."""
        if not self.prefix:
            return "TRUE"
        like = q(like_prefix(self.prefix))
        return (f"(lower(s.customer_id) LIKE {like} OR lower(p.display_name) LIKE {like} "
                f"OR lower(p.email) LIKE {like})")

    def hits(self, q: _Query) -> str:
        """The customers the prefix finds, each of id, name and email through its own index."""
        space, low, high = q(self.space), q(self.prefix), q(self.prefix + _TOP)
        like = q(like_prefix(self.prefix))
        parts = [f"SELECT customer_id FROM customer_state WHERE space_id = {space} AND lower(customer_id) ~>=~ {low} "
                 f"AND lower(customer_id) ~<~ {high} AND lower(customer_id) LIKE {like}"]
        for column in ("display_name", "email"):
            parts.append(f"SELECT customer_id FROM customer_profiles WHERE space_id = {space} "
                         f"AND lower({column}) ~>=~ {low} AND lower({column}) ~<~ {high} "
                         f"AND lower({column}) LIKE {like}")
        return f"s.customer_id IN ({' UNION '.join(parts)})"


_COLUMNS = f"{_STATE}, p.display_name, p.email"
_JOINED = ("FROM customer_state s LEFT JOIN customer_profiles p "
           "ON p.space_id = s.space_id AND p.customer_id = s.customer_id")


async def _selective(conn: asyncpg.Connection, asked: _Asked) -> bool:
    """Whether each of the prefix's three indexes finds at most ``SELECTIVE`` customers."""
    counts: list[str] = []
    for table, column in (("customer_state", "customer_id"), ("customer_profiles", "display_name"),
                          ("customer_profiles", "email")):
        counts.append(f"(SELECT count(*) FROM (SELECT 1 FROM {table} WHERE space_id = $1 AND lower({column}) ~>=~ $2 "
                      f"AND lower({column}) ~<~ $3 AND lower({column}) LIKE $4 LIMIT $5) AS {column}_{len(counts)})")
    found = await conn.fetchrow(f"SELECT greatest({', '.join(counts)})", asked.space, asked.prefix,
                                asked.prefix + _TOP, like_prefix(asked.prefix), SELECTIVE + 1)
    return bool(found is not None and found[0] <= SELECTIVE)


async def in_blocks(conn: asyncpg.Connection, space: str, search: str) -> bool:
    """Whether ``people_page`` shows this search in blocks (names, emails, ids) rather than sorted as asked."""
    prefix = search.strip().lower()
    return bool(prefix) and not await _selective(conn, _Asked(space, prefix, None, None, None))


async def _rows(conn: asyncpg.Connection, sql: str, q: _Query) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(sql, *q.args)
    return rows


# An unselective prefix's matches, in blocks each walked along its own index: names first (in name order),
# then those found only by email (in email order), then only by id. Each block excludes the earlier ones.
_BLOCKS = (
    ("FROM customer_profiles p JOIN customer_state s ON s.space_id = p.space_id AND s.customer_id = p.customer_id "
     "WHERE p.space_id = {space} AND lower(p.display_name) ~>=~ {low} AND lower(p.display_name) ~<~ {high} "
     "AND lower(p.display_name) LIKE {like}", "lower(p.display_name) USING ~<~, p.customer_id"),
    ("FROM customer_profiles p JOIN customer_state s ON s.space_id = p.space_id AND s.customer_id = p.customer_id "
     "WHERE p.space_id = {space} AND lower(p.email) ~>=~ {low} AND lower(p.email) ~<~ {high} "
     "AND lower(p.email) LIKE {like} AND coalesce(lower(p.display_name), '') NOT LIKE {like}",
     "lower(p.email) USING ~<~, p.customer_id"),
    (_JOINED + " WHERE s.space_id = {space} AND lower(s.customer_id) ~>=~ {low} AND lower(s.customer_id) ~<~ {high} "
     "AND lower(s.customer_id) LIKE {like} AND coalesce(lower(p.display_name), '') NOT LIKE {like} "
     "AND coalesce(lower(p.email), '') NOT LIKE {like}", "lower(s.customer_id) USING ~<~, s.customer_id"),
)


async def _walk_blocks(conn: asyncpg.Connection, asked: _Asked, offset: int, limit: int) -> list[asyncpg.Record]:
    """A page of an unselective prefix's matches: names, then emails only, then ids only; each block read up to
    the page's end (its size is known once a block ends before it)."""
    rows: list[asyncpg.Record] = []
    skip = offset
    for source, order in _BLOCKS:
        q = _Query()
        where = source.format(space=q(asked.space), low=q(asked.prefix), high=q(asked.prefix + _TOP),
                              like=q(like_prefix(asked.prefix)))
        wanted = skip + limit - len(rows)
        found = await _rows(conn, f"SELECT {_COLUMNS} {where} AND {asked.filters(q)} ORDER BY {order} "
                                  f"LIMIT {q(wanted)}", q)
        rows.extend(found[skip:])
        if len(rows) >= limit:
            return rows[:limit]
        skip = max(0, skip - len(found))
    return rows


async def _walk_by_status(conn: asyncpg.Connection, asked: _Asked, offset: int, limit: int) -> list[asyncpg.Record]:
    """The list by status without sorting the space: the suspended in id order, then the others."""
    rows: list[asyncpg.Record] = []
    skip = offset
    for suspended in ((True, False) if asked.suspended is None else (asked.suspended,)):
        q = _Query()
        found = await _rows(conn, f"SELECT {_COLUMNS} {_JOINED} WHERE {asked.filters(q)} "
                                  f"AND s.suspended = {q(suspended)} ORDER BY s.customer_id "
                                  f"LIMIT {q(skip + limit - len(rows))}", q)
        rows.extend(found[skip:])
        if len(rows) >= limit:
            return rows[:limit]
        skip = max(0, skip - len(found))
    return rows


async def _walk_by_name(conn: asyncpg.Connection, asked: _Asked, offset: int, limit: int) -> list[asyncpg.Record]:
    """The list in name order without gathering it: the named customers along the name index, then (once
    they are passed) those without a name in id order."""
    q = _Query()
    named = (f"FROM customer_profiles p JOIN customer_state s ON s.space_id = p.space_id "
             f"AND s.customer_id = p.customer_id WHERE p.space_id = {q(asked.space)} AND p.display_name IS NOT NULL "
             f"AND {asked.filters(q)} AND {asked.matches(q)}")
    rows = await _rows(conn, f"SELECT {_COLUMNS} {named} ORDER BY lower(p.display_name), p.customer_id "
                             f"LIMIT {q(limit)} OFFSET {q(offset)}", q)
    if len(rows) == limit:
        return rows
    if rows:
        named_total = offset + len(rows)
    else:
        counted = _Query()
        named_total = int(await conn.fetchval(
            f"SELECT count(*) FROM customer_profiles p JOIN customer_state s ON s.space_id = p.space_id "
            f"AND s.customer_id = p.customer_id WHERE p.space_id = {counted(asked.space)} "
            f"AND p.display_name IS NOT NULL AND {asked.filters(counted)} AND {asked.matches(counted)}",
            *counted.args))
    q = _Query()
    rest = await _rows(conn, f"SELECT {_COLUMNS} {_JOINED} WHERE {asked.filters(q)} AND p.display_name IS NULL "
                             f"AND {asked.matches(q)} ORDER BY s.customer_id LIMIT {q(limit - len(rows))} "
                             f"OFFSET {q(max(0, offset - named_total))}", q)
    return [*rows, *rest]


async def people_page(conn: asyncpg.Connection, space: str, *, search: str = "", suspended: bool | None = None,
                      reason: str | None = None, scheduled: str | None = None, sort: Sort = "name", offset: int = 0,
                      after: str | None = None, limit: int = 50) -> list[Person]:
    """One page of a space's customers with their names, filtered and sorted; ``after`` (a customer id) pages
    by keyset in id order, ``offset`` otherwise.

    A selective prefix (at most ``SELECTIVE`` customers by each of id, name and email) gathers its customers
    through the three prefix indexes and sorts them as asked. An unselective one is shown in blocks instead
    (``_walk_blocks``: names, then emails, then ids, each in its own order), so that a page never sorts a
    large part of the space; the console says so. Without a prefix the list walks the name index (name
    order), the state's id order, or that twice (status: the suspended, then the others); the last-change
    order sorts the space's customers (an index on ``customer_state.updated_at`` would cost every state write
    its HOT update)."""
    asked = _Asked(space, search.strip().lower(), suspended, reason, scheduled)
    sort = "id" if after is not None else sort
    gathered = bool(asked.prefix) and await _selective(conn, asked)
    if asked.prefix and not gathered and after is None:
        rows = await _walk_blocks(conn, asked, offset, limit)
    elif sort == "name" and not asked.prefix:
        rows = await _walk_by_name(conn, asked, offset, limit)
    elif sort == "status" and not asked.prefix:
        rows = await _walk_by_status(conn, asked, offset, limit)
    else:
        q = _Query()
        where = asked.filters(q) + " AND " + (asked.hits(q) if gathered else asked.matches(q))
        if after is not None:
            where += f" AND s.customer_id > {q(after)}"
        page = f"LIMIT {q(limit)}" + ("" if after is not None else f" OFFSET {q(offset)}")
        rows = await _rows(conn, f"SELECT {_COLUMNS} {_JOINED} WHERE {where} ORDER BY {SORTS[sort]} {page}", q)
    return [Person(state_from_row(row), row["display_name"], row["email"]) for row in rows]


async def profile(conn: asyncpg.Connection, space: str, customer: str) -> Profile | None:
    row = await conn.fetchrow(
        "SELECT display_name, email, updated_at, forgotten_at, forgotten_by FROM customer_profiles "
        "WHERE space_id = $1 AND customer_id = $2", space, customer)
    return None if row is None else Profile(**dict(row.items()))


async def profiles(conn: asyncpg.Connection, space: str, customers: list[str]) -> dict[str, Profile]:
    rows = await conn.fetch(
        "SELECT customer_id, display_name, email, updated_at, forgotten_at, forgotten_by FROM customer_profiles "
        "WHERE space_id = $1 AND customer_id = ANY($2::text[])", space, sorted(set(customers)))
    return {row["customer_id"]: Profile(row["display_name"], row["email"], row["updated_at"], row["forgotten_at"],
                                        row["forgotten_by"]) for row in rows}


async def erasures(conn: asyncpg.Connection, space: str, customer: str) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(
        "SELECT actor, erased_at FROM profile_erasures WHERE space_id = $1 AND customer_id = $2 ORDER BY id",
        space, customer)
    return rows


async def erasures_of(conn: asyncpg.Connection, customer: str) -> list[asyncpg.Record]:
    """Every erasure of this customer's personal data, in any space (the CLI's history filters by space)."""
    rows: list[asyncpg.Record] = await conn.fetch(
        "SELECT space_id, actor, erased_at FROM profile_erasures WHERE customer_id = $1 ORDER BY id", customer)
    return rows


async def forget(conn: asyncpg.Connection, space: str, customer: str, actor: str,
                 now: datetime | None = None) -> bool:
    """Erase the customer's name and email (a data-protection request) and record who did it; False when the
    service knows no such customer in this space. A record older than the erasure (a replay) never brings
    them back; a later one from upstream is a new profile."""
    moment = now or datetime.now(UTC)
    async with conn.transaction():
        known = await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM customer_state WHERE space_id = $1 AND customer_id = $2) "
            "OR EXISTS (SELECT 1 FROM customer_profiles WHERE space_id = $1 AND customer_id = $2)", space, customer)
        if not known:
            return False
        await conn.execute(
            "INSERT INTO customer_profiles (space_id, customer_id, display_name, email, updated_at, source, "
            "forgotten_at, forgotten_by) VALUES ($1, $2, NULL, NULL, $3, 'forget', $3, $4) "
            "ON CONFLICT (space_id, customer_id) DO UPDATE SET display_name = NULL, email = NULL, "
            "updated_at = greatest(customer_profiles.updated_at, EXCLUDED.updated_at), source = 'forget', "
            "forgotten_at = EXCLUDED.forgotten_at, forgotten_by = EXCLUDED.forgotten_by",
            space, customer, moment, actor)
        await conn.execute(
            "INSERT INTO profile_erasures (space_id, customer_id, actor, erased_at) VALUES ($1, $2, $3, $4)",
            space, customer, actor, moment)
    return True
