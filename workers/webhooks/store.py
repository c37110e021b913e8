"""The SQL of webhooks, in one place: endpoints (for the CLI, the API and the console), deliveries and
attempts (for the worker). Tables: ``migrations/009_webhooks.sql``."""

from __future__ import annotations

import secrets as random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg

from models.lifecycle import EventType
from workers.webhooks.guard import check_url
from workers.webhooks.signing import new_secret, test_body

EVENT_TYPES = tuple(event_type.value for event_type in EventType)
DESCRIPTION_MAX_LENGTH = 500
TEST_PARTITION = -1  # a delivery any dispatcher may send: not tied to a partition of suspension.events


class EndpointError(ValueError):
    """An endpoint that cannot be registered as asked; the message says why, ``field`` which value."""

    def __init__(self, message: str, field: str = "url") -> None:
        super().__init__(message)
        self.field = field


def event_types(names: Iterable[str]) -> list[str]:
    """The lifecycle event types named (``suspended`` or ``suspension.suspended``), sorted, no duplicates."""
    chosen = {name.strip().removeprefix("suspension.") for name in names if name.strip()}
    unknown = sorted(chosen - set(EVENT_TYPES))
    if unknown:
        raise EndpointError(f"unknown event type(s) {', '.join(unknown)}; choose from {', '.join(EVENT_TYPES)}",
                            "events")
    return sorted(chosen)


def new_endpoint_id() -> str:
    return "ep_" + random.token_hex(10)


# --- endpoints ---------------------------------------------------------------------------------------

ENDPOINT_COLUMNS = """e.endpoint_id, e.space_id, e.url, e.description, e.event_types, e.enabled, e.disabled_reason,
    e.disabled_at, e.failing_since, e.created_at, e.previous_secret_until"""
HEALTH = """
    (SELECT count(*) FROM webhook_deliveries d WHERE d.endpoint_id = e.endpoint_id AND d.status = 'pending')
        AS pending,
    (SELECT min(d.created_at) FROM webhook_deliveries d WHERE d.endpoint_id = e.endpoint_id AND d.status = 'pending')
        AS oldest_pending_at,
    (SELECT max(d.finished_at) FROM webhook_deliveries d
        WHERE d.endpoint_id = e.endpoint_id AND d.status = 'delivered') AS last_delivered_at"""


async def add_endpoint(conn: asyncpg.Connection, space: str, url: str, events: Iterable[str], description: str | None,
                       allow_private: bool, now: datetime) -> tuple[asyncpg.Record, str]:
    """Register an endpoint; returns its row and its secret (the only time the secret is given out)."""
    try:
        checked = check_url(url.strip(), allow_private)
    except ValueError as error:
        raise EndpointError(str(error)) from None
    if description is not None and len(description) > DESCRIPTION_MAX_LENGTH:
        raise EndpointError(f"a description has at most {DESCRIPTION_MAX_LENGTH} characters", "description")
    if not space.strip():
        raise EndpointError("a space is required", "space")
    secret = new_secret()
    endpoint_id = new_endpoint_id()
    await conn.execute(
        "INSERT INTO webhook_endpoints (endpoint_id, space_id, url, description, event_types, secret, created_at)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7)",
        endpoint_id, space, checked, description, event_types(events), secret, now)
    row = await endpoint(conn, endpoint_id)
    assert row is not None
    return row, secret


async def endpoints(conn: asyncpg.Connection, space: str | None) -> list[asyncpg.Record]:
    """The space's endpoints (every space's for None) with their health, oldest first."""
    return list(await conn.fetch(
        f"SELECT {ENDPOINT_COLUMNS}, {HEALTH} FROM webhook_endpoints e"
        " WHERE $1::text IS NULL OR e.space_id = $1 ORDER BY e.created_at, e.endpoint_id", space))


async def endpoint(conn: asyncpg.Connection, endpoint_id: str, space: str | None = None) -> asyncpg.Record | None:
    """One endpoint with its health; None when it does not exist (or is of another space than ``space``)."""
    return await conn.fetchrow(
        f"SELECT {ENDPOINT_COLUMNS}, {HEALTH} FROM webhook_endpoints e"
        " WHERE e.endpoint_id = $1 AND ($2::text IS NULL OR e.space_id = $2)", endpoint_id, space)


async def remove_endpoint(conn: asyncpg.Connection, endpoint_id: str, space: str | None = None) -> bool:
    """Remove it with its deliveries and attempts; False when there is none."""
    removed = await conn.fetchval(
        "DELETE FROM webhook_endpoints WHERE endpoint_id = $1 AND ($2::text IS NULL OR space_id = $2)"
        " RETURNING endpoint_id", endpoint_id, space)
    return removed is not None


async def rotate_secret(conn: asyncpg.Connection, endpoint_id: str, overlap: timedelta, now: datetime,
                        space: str | None = None) -> str | None:
    """A new secret; the current one keeps signing beside it for ``overlap``. None when there is no endpoint."""
    secret = new_secret()
    rotated = await conn.fetchval(
        "UPDATE webhook_endpoints SET previous_secret = secret, previous_secret_until = $3, secret = $4"
        " WHERE endpoint_id = $1 AND ($2::text IS NULL OR space_id = $2) RETURNING endpoint_id",
        endpoint_id, space, now + overlap, secret)
    return secret if rotated is not None else None


async def enable_endpoint(conn: asyncpg.Connection, endpoint_id: str, space: str | None = None) -> bool:
    """Enable a disabled endpoint again (its failures forgotten); False when there is none."""
    enabled = await conn.fetchval(
        "UPDATE webhook_endpoints SET enabled = true, disabled_reason = NULL, disabled_at = NULL,"
        " failing_since = NULL WHERE endpoint_id = $1 AND ($2::text IS NULL OR space_id = $2) RETURNING endpoint_id",
        endpoint_id, space)
    return enabled is not None


async def deliveries(conn: asyncpg.Connection, endpoint_id: str, limit: int = 50) -> list[asyncpg.Record]:
    """The endpoint's latest deliveries, newest first, each with its last attempt."""
    return list(await conn.fetch(
        """SELECT d.delivery_id, d.event_id, d.event_type, d.customer_id, d.replay, d.status, d.attempts,
                  d.occurred_at, d.created_at, d.next_attempt_at, d.finished_at, d.last_error,
                  a.status_code, a.latency_ms, a.attempted_at, a.attempt
           FROM webhook_deliveries d
           LEFT JOIN LATERAL (SELECT status_code, latency_ms, attempted_at, attempt FROM webhook_attempts a
                              WHERE a.delivery_id = d.delivery_id ORDER BY a.attempt DESC LIMIT 1) a ON true
           WHERE d.endpoint_id = $1 ORDER BY d.delivery_id DESC LIMIT $2""", endpoint_id, limit))


async def attempts(conn: asyncpg.Connection, delivery_id: int) -> list[asyncpg.Record]:
    return list(await conn.fetch(
        "SELECT attempt, attempted_at, status_code, latency_ms, error, response FROM webhook_attempts"
        " WHERE delivery_id = $1 ORDER BY attempt", delivery_id))


async def replay(conn: asyncpg.Connection, endpoint_id: str, since: datetime, now: datetime) -> int:
    """Send again every event of the endpoint that occurred since ``since`` (as far back as deliveries are
    kept), after what is pending, in the original order, with the same ``webhook-id``. Returns how many."""
    async with conn.transaction():
        number = await conn.fetchval("SELECT nextval('webhook_replays')")
        status = await conn.execute(
            """INSERT INTO webhook_deliveries (endpoint_id, event_id, replay, event_type, customer_id,
                   source_partition, occurred_at, body, next_attempt_at, created_at)
               SELECT endpoint_id, event_id, $3, event_type, customer_id, source_partition, occurred_at, body,
                      'infinity'::timestamptz, $4
               FROM (SELECT DISTINCT ON (event_id) * FROM webhook_deliveries
                     WHERE endpoint_id = $1 AND occurred_at >= $2 AND source_partition <> $5
                     ORDER BY event_id, delivery_id) original
               ORDER BY delivery_id""",
            endpoint_id, since, number, now, TEST_PARTITION)
        await promote_parked(conn, None, endpoint_id)
    return int(status.split()[-1])


async def send_test_event(conn: asyncpg.Connection, row: asyncpg.Record, now: datetime) -> str:
    """A test delivery to the endpoint, sent by whichever webhooks worker sees it first; its event id."""
    event_id = "test_" + random.token_hex(12)
    await conn.execute(
        """INSERT INTO webhook_deliveries (endpoint_id, event_id, event_type, customer_id, source_partition,
               occurred_at, body, next_attempt_at, created_at) VALUES ($1, $2, 'webhook.test', $2, $3, $4, $5, $4, $4)""",
        row["endpoint_id"], event_id, TEST_PARTITION, now,
        test_body(row["endpoint_id"], row["space_id"], now.isoformat().replace("+00:00", "Z")))
    return event_id


# --- deliveries: the worker --------------------------------------------------------------------------


@dataclass(frozen=True)
class NewDelivery:
    endpoint_id: str
    event_id: str
    event_type: str
    customer_id: str
    source_partition: int
    occurred_at: datetime
    body: bytes


async def subscribed(conn: asyncpg.Connection, spaces: Iterable[str]) -> list[asyncpg.Record]:
    """The enabled endpoints of these spaces and the types each takes (empty: every type)."""
    return list(await conn.fetch(
        "SELECT endpoint_id, space_id, event_types FROM webhook_endpoints WHERE enabled AND space_id = ANY($1::text[])",
        sorted(set(spaces))))


async def insert_deliveries(conn: asyncpg.Connection, rows: Sequence[NewDelivery], now: datetime) -> None:
    """Pending deliveries, in order; an event consumed again (a redelivered batch) adds nothing.

    Only the first pending delivery of an endpoint and customer is due; the ones behind it are parked (their
    next attempt at infinity) until it finishes (``record_attempt`` moves the next one up), so looking for
    due deliveries never wades through a backlog that must wait anyway."""
    if not rows:
        return
    seen: set[tuple[str, str]] = set()
    first: list[bool] = []
    for row in rows:
        key = (row.endpoint_id, row.customer_id)
        first.append(key not in seen)
        seen.add(key)
    await conn.execute(
        """INSERT INTO webhook_deliveries (endpoint_id, event_id, event_type, customer_id, source_partition,
               occurred_at, body, next_attempt_at, created_at)
           SELECT u.endpoint_id, u.event_id, u.event_type, u.customer_id, u.source_partition, u.occurred_at, u.body,
                  CASE WHEN u.first AND NOT EXISTS (
                           SELECT 1 FROM webhook_deliveries p WHERE p.endpoint_id = u.endpoint_id
                             AND p.customer_id = u.customer_id AND p.status = 'pending')
                       THEN $9 ELSE 'infinity'::timestamptz END,
                  $9
           FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::int[], $6::timestamptz[], $7::bytea[],
                       $8::bool[])
                WITH ORDINALITY AS u(endpoint_id, event_id, event_type, customer_id, source_partition, occurred_at,
                                     body, first, position)
           ORDER BY u.position
           ON CONFLICT (endpoint_id, event_id, replay) DO NOTHING""",
        [row.endpoint_id for row in rows], [row.event_id for row in rows], [row.event_type for row in rows],
        [row.customer_id for row in rows], [row.source_partition for row in rows],
        [row.occurred_at for row in rows], [row.body for row in rows], first, now)


async def promote_parked(conn: asyncpg.Connection, partitions: Sequence[int] | None,
                         endpoint_id: str | None = None) -> int:
    """Make due every parked delivery with nothing pending before it (of these partitions, or of this
    endpoint): those whose predecessor finished while they were being written (each transaction saw the
    other's state from before) or that a replay parked. Returns how many."""
    status = await conn.execute(
        """UPDATE webhook_deliveries d SET next_attempt_at = now()
           WHERE d.status = 'pending' AND d.next_attempt_at = 'infinity'::timestamptz
             AND ($1::int[] IS NULL OR d.source_partition = ANY($1::int[]) OR d.source_partition = $3)
             AND ($2::text IS NULL OR d.endpoint_id = $2)
             AND NOT EXISTS (SELECT 1 FROM webhook_deliveries p
                             WHERE p.endpoint_id = d.endpoint_id AND p.customer_id = d.customer_id
                               AND p.status = 'pending' AND p.delivery_id < d.delivery_id)""",
        None if partitions is None else list(partitions), endpoint_id, TEST_PARTITION)
    return int(status.split()[-1])


async def claim_due(conn: asyncpg.Connection, partitions: Sequence[int], full_endpoints: Sequence[str], limit: int,
                    per_endpoint: int, lease_s: float) -> list[asyncpg.Record]:
    """Take the due deliveries of these partitions (and the test ones), at most ``per_endpoint`` per endpoint
    and ``limit`` in all, each the oldest pending one of its endpoint and customer; each is leased (its next
    attempt moved ``lease_s`` ahead), so no other dispatcher takes it while it is sent. With its endpoint."""
    async with conn.transaction():
        # The plan PostgreSQL would reuse for every call (a generic one, after five) ignores how few rows
        # are due: measured 30 times slower under load (100 ms a call instead of 3). Planned per call instead.
        await conn.execute("SET LOCAL plan_cache_mode = force_custom_plan")
        return await _claim(conn, partitions, full_endpoints, limit, per_endpoint, lease_s)


async def _claim(conn: asyncpg.Connection, partitions: Sequence[int], full_endpoints: Sequence[str], limit: int,
                 per_endpoint: int, lease_s: float) -> list[asyncpg.Record]:
    return list(await conn.fetch(
        """WITH heads AS (
               SELECT d.delivery_id, d.next_attempt_at,
                      row_number() OVER (PARTITION BY d.endpoint_id ORDER BY d.next_attempt_at, d.delivery_id) AS n
               FROM webhook_deliveries d
               JOIN webhook_endpoints e ON e.endpoint_id = d.endpoint_id AND e.enabled
               WHERE d.status = 'pending' AND d.next_attempt_at <= now()
                 AND (d.source_partition = ANY($1::int[]) OR d.source_partition = $6)
                 AND NOT d.endpoint_id = ANY($2::text[])
                 AND NOT EXISTS (SELECT 1 FROM webhook_deliveries p
                                 WHERE p.endpoint_id = d.endpoint_id AND p.customer_id = d.customer_id
                                   AND p.status = 'pending' AND p.delivery_id < d.delivery_id)),
           picked AS (
               SELECT delivery_id FROM heads WHERE n <= $4 ORDER BY next_attempt_at LIMIT $3),
           -- Locked only now, and checked again once locked: a row another dispatcher leased meanwhile is
           -- no longer due, and one it holds is skipped.
           locked AS (
               SELECT d.delivery_id FROM webhook_deliveries d JOIN picked ON picked.delivery_id = d.delivery_id
               WHERE d.status = 'pending' AND d.next_attempt_at <= now()
               FOR UPDATE OF d SKIP LOCKED)
           UPDATE webhook_deliveries d SET next_attempt_at = now() + make_interval(secs => $5)
           FROM locked, webhook_endpoints e
           WHERE d.delivery_id = locked.delivery_id AND e.endpoint_id = d.endpoint_id
           RETURNING d.delivery_id, d.endpoint_id, d.event_id, d.customer_id, d.body, d.attempts, d.created_at,
                     e.url, e.secret, e.previous_secret, e.previous_secret_until, e.failing_since""",
        list(partitions), list(full_endpoints), limit, per_endpoint, lease_s, TEST_PARTITION))


@dataclass(frozen=True)
class Attempt:
    delivery_id: int
    endpoint_id: str
    customer_id: str
    attempt: int
    attempted_at: datetime
    status_code: int | None
    latency_ms: float
    error: str | None
    response: str | None


@dataclass(frozen=True)
class Outcome:
    """An attempt and what follows it: delivered; retried at ``next_attempt_at``; or given up (neither);
    ``disable_reason`` disables the endpoint."""

    attempt: Attempt
    delivered: bool
    next_attempt_at: datetime | None
    disable_reason: str | None = None

    @property
    def status(self) -> str:
        return "delivered" if self.delivered else ("pending" if self.next_attempt_at is not None else "failed")


async def record_attempts(conn: asyncpg.Connection, outcomes: Sequence[Outcome]) -> set[int]:
    """Record attempts and their consequences in one transaction (a dispatcher records what finished
    meanwhile together: one transaction, not one per attempt); the next delivery of each endpoint and
    customer whose delivery finished becomes due. Returns the ids of the deliveries recorded: not one that
    is gone (its endpoint was removed) or no longer pending (recorded already)."""
    if not outcomes:
        return set()
    attempts = [outcome.attempt for outcome in outcomes]
    async with conn.transaction():
        rows = await conn.fetch(
            """WITH r AS (
                   SELECT * FROM unnest($1::bigint[], $2::text[], $3::int[], $4::int[], $5::text[], $6::timestamptz[],
                                        $7::timestamptz[], $8::float8[], $9::text[])
                       AS r(delivery_id, status, attempt, status_code, error, next_at, at, latency_ms, response)),
               updated AS (
                   UPDATE webhook_deliveries d SET status = r.status, attempts = r.attempt,
                          last_status = r.status_code, last_error = r.error,
                          next_attempt_at = coalesce(r.next_at, d.next_attempt_at),
                          finished_at = CASE WHEN r.status = 'pending' THEN NULL ELSE r.at END
                   FROM r WHERE d.delivery_id = r.delivery_id AND d.status = 'pending'
                   RETURNING d.delivery_id)
               INSERT INTO webhook_attempts (delivery_id, attempt, attempted_at, status_code, latency_ms, error, response)
               SELECT r.delivery_id, r.attempt, r.at, r.status_code, r.latency_ms, r.error, r.response
               FROM r JOIN updated ON updated.delivery_id = r.delivery_id
               RETURNING delivery_id""",
            [a.delivery_id for a in attempts], [o.status for o in outcomes], [a.attempt for a in attempts],
            [a.status_code for a in attempts], [a.error for a in attempts], [o.next_attempt_at for o in outcomes],
            [a.attempted_at for a in attempts], [a.latency_ms for a in attempts], [a.response for a in attempts])
        recorded = {row["delivery_id"] for row in rows}
        finished = {(o.attempt.endpoint_id, o.attempt.customer_id) for o in outcomes
                    if o.attempt.delivery_id in recorded and o.status != "pending"}
        if finished:
            await conn.execute(
                """UPDATE webhook_deliveries d SET next_attempt_at = now()
                   WHERE d.delivery_id IN (
                       SELECT (SELECT p.delivery_id FROM webhook_deliveries p
                               WHERE p.endpoint_id = k.endpoint_id AND p.customer_id = k.customer_id
                                 AND p.status = 'pending' ORDER BY p.delivery_id LIMIT 1)
                       FROM unnest($1::text[], $2::text[]) AS k(endpoint_id, customer_id))
                     AND d.next_attempt_at = 'infinity'::timestamptz""",
                [endpoint for endpoint, _ in finished], [customer for _, customer in finished])
        # Per endpoint, its last attempt here says whether it is failing; any disable reason disables it.
        last: dict[str, Outcome] = {}
        disabled: dict[str, Outcome] = {}
        for outcome in outcomes:
            if outcome.attempt.delivery_id in recorded:
                last[outcome.attempt.endpoint_id] = outcome
                if outcome.disable_reason is not None:
                    disabled.setdefault(outcome.attempt.endpoint_id, outcome)
        ok = [endpoint for endpoint, outcome in last.items() if outcome.delivered]
        failing = [(endpoint, outcome.attempt.attempted_at) for endpoint, outcome in last.items()
                   if not outcome.delivered]
        if ok:
            await conn.execute("UPDATE webhook_endpoints SET failing_since = NULL"
                               " WHERE endpoint_id = ANY($1::text[]) AND failing_since IS NOT NULL", ok)
        if failing:
            await conn.execute(
                "UPDATE webhook_endpoints e SET failing_since = f.at FROM unnest($1::text[], $2::timestamptz[])"
                " AS f(endpoint_id, at) WHERE e.endpoint_id = f.endpoint_id AND e.failing_since IS NULL",
                [endpoint for endpoint, _ in failing], [at for _, at in failing])
        for endpoint, outcome in disabled.items():
            await conn.execute(
                "UPDATE webhook_endpoints SET enabled = false, disabled_reason = $2, disabled_at = $3"
                " WHERE endpoint_id = $1 AND enabled", endpoint, outcome.disable_reason, outcome.attempt.attempted_at)
    return recorded


async def oldest_pending(conn: asyncpg.Connection, partitions: Sequence[int]) -> dict[str, datetime]:
    """Per endpoint, when its oldest pending delivery of these partitions (or a test one) was created."""
    rows = await conn.fetch(
        "SELECT d.endpoint_id, min(d.created_at) AS oldest FROM webhook_deliveries d"
        " JOIN webhook_endpoints e ON e.endpoint_id = d.endpoint_id AND e.enabled"
        " WHERE d.status = 'pending' AND (d.source_partition = ANY($1::int[]) OR d.source_partition = $2)"
        " GROUP BY d.endpoint_id", list(partitions), TEST_PARTITION)
    return {row["endpoint_id"]: row["oldest"] for row in rows}


# --- what the CLI, the API and the console show -----------------------------------------------------


def health(row: asyncpg.Record) -> str:
    """An endpoint's health in a word: disabled, failing (since its last success), or ok."""
    if not row["enabled"]:
        return "disabled"
    return "failing" if row["failing_since"] is not None else "ok"


def endpoint_fields(row: asyncpg.Record) -> dict[str, object]:
    """An endpoint as the CLI's ``--json`` and the API show it (never its secret)."""
    return {"id": row["endpoint_id"], "space_id": row["space_id"], "url": row["url"],
            "description": row["description"], "events": list(row["event_types"]), "enabled": row["enabled"],
            "health": health(row), "disabled_reason": row["disabled_reason"], "disabled_at": row["disabled_at"],
            "failing_since": row["failing_since"], "created_at": row["created_at"],
            "previous_secret_until": row["previous_secret_until"], "pending": row["pending"],
            "oldest_pending_at": row["oldest_pending_at"], "last_delivered_at": row["last_delivered_at"]}


def delivery_fields(row: asyncpg.Record) -> dict[str, object]:
    """A delivery with its last attempt, as the CLI's ``--json`` and the API show it."""
    return {"delivery_id": row["delivery_id"], "event_id": row["event_id"], "type": row["event_type"],
            "customer_id": row["customer_id"], "replay": row["replay"], "status": row["status"],
            "attempts": row["attempts"], "occurred_at": row["occurred_at"], "created_at": row["created_at"],
            "next_attempt_at": row["next_attempt_at"] if row["status"] == "pending" and row["next_attempt_at"]
            and row["next_attempt_at"].year < 9999 else None,  # parked behind an earlier one: no time yet
            "finished_at": row["finished_at"], "status_code": row["status_code"],
            "latency_ms": row["latency_ms"], "last_attempt_at": row["attempted_at"], "error": row["last_error"]}
