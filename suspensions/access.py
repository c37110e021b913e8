"""Who may do what: API tokens, roles, spaces, and console sessions (all kept in PostgreSQL).

A token is shown once; PostgreSQL keeps its sha256 (tokens are 256 random bits, so a slow hash buys
nothing), and every request looks it up again, so a revoked token stops working at once on every
API process. The actor recorded on a command is ``admin:<token name>``, never what a request claims.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import IntEnum

import asyncpg

TOKEN_PREFIX = "sus_"
NAME_PATTERN = re.compile(r"^[A-Za-z0-9._@-]{1,100}$")  # an actor is admin:<name>, no white space
SESSION_LIFETIME = timedelta(hours=12)


class Role(IntEnum):
    """Ordered: each role may do what the ones below it may."""

    VIEWER = 1  # reads
    OPERATOR = 2  # also suspends, lifts and runs bulk actions
    ADMIN = 3  # also sees the lag and health of the whole service

    @classmethod
    def named(cls, name: str) -> Role:
        return cls[name.upper()]


@dataclass(frozen=True)
class Principal:
    name: str
    role: Role
    spaces: frozenset[str]

    @property
    def actor(self) -> str:
        return f"admin:{self.name}"

    def sees(self, space: str) -> bool:
        return space in self.spaces

    def may(self, role: Role) -> bool:
        return self.role >= role


def digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


class AccessError(ValueError):
    """A token that cannot be created as asked."""


async def create_token(conn: asyncpg.Connection, name: str, role: Role, spaces: list[str]) -> str:
    if not NAME_PATTERN.match(name):
        raise AccessError("a token name is 1 to 100 letters, digits or ._@- (it becomes the actor admin:<name>)")
    if not spaces:
        raise AccessError("a token needs at least one --space")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    try:
        await conn.execute(
            "INSERT INTO api_tokens (name, token_hash, role, spaces, created_at) VALUES ($1, $2, $3, $4, $5)",
            name, digest(token), role.name.lower(), sorted(set(spaces)), datetime.now(UTC))
    except asyncpg.UniqueViolationError:
        raise AccessError(f"a token named {name!r} exists already (revoke it first)") from None
    return token


async def list_tokens(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(
        "SELECT name, role, spaces, created_at, revoked_at FROM api_tokens ORDER BY name")
    return rows


async def revoke_token(conn: asyncpg.Connection, name: str) -> bool:
    """Revoked at once for every API process; its console sessions end with it."""
    async with conn.transaction():
        revoked = await conn.fetchval(
            "UPDATE api_tokens SET revoked_at = $2 WHERE name = $1 AND revoked_at IS NULL RETURNING name",
            name, datetime.now(UTC))
        await conn.execute("DELETE FROM console_sessions WHERE token_name = $1", name)
    return revoked is not None


async def token_is_live(conn: asyncpg.Connection, name: str) -> bool:
    """Whether the token of this name still works: asked again by work that outlives its request (a bulk
    job), so a revocation stops it too, not only the token's next request."""
    return bool(await conn.fetchval("SELECT revoked_at IS NULL FROM api_tokens WHERE name = $1", name))


def _principal(row: asyncpg.Record | None) -> Principal | None:
    if row is None:
        return None
    return Principal(row["name"], Role.named(row["role"]), frozenset(row["spaces"]))


async def principal_for_token(conn: asyncpg.Connection, token: str) -> Principal | None:
    row = await conn.fetchrow("SELECT name, role, spaces FROM api_tokens WHERE token_hash = $1 AND revoked_at IS NULL",
                              digest(token))
    return _principal(row)


async def open_session(conn: asyncpg.Connection, principal: Principal) -> tuple[str, str]:
    """A console session for a signed-in token: (the cookie's value, the form token against cross-site posts)."""
    session, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(24)
    now = datetime.now(UTC)
    await conn.execute(
        "INSERT INTO console_sessions (session_hash, token_name, csrf, created_at, expires_at, last_seen_at) "
        "VALUES ($1, $2, $3, $4, $5, $4)", digest(session), principal.name, csrf, now, now + SESSION_LIFETIME)
    return session, csrf


async def session_principal(conn: asyncpg.Connection, session: str,
                            idle: timedelta) -> tuple[Principal, str] | None:
    """The session's principal and form token, while the session is live (before its absolute expiry,
    and used within ``idle``) and its token not revoked; marks it used now, in the same statement."""
    now = datetime.now(UTC)
    row = await conn.fetchrow(
        "UPDATE console_sessions s SET last_seen_at = $2 FROM api_tokens t "
        "WHERE s.session_hash = $1 AND t.name = s.token_name AND s.expires_at > $2 AND s.last_seen_at > $3 "
        "AND t.revoked_at IS NULL RETURNING t.name, t.role, t.spaces, s.csrf", digest(session), now, now - idle)
    principal = _principal(row)
    return None if principal is None or row is None else (principal, row["csrf"])


async def purge_sessions(conn: asyncpg.Connection, idle: timedelta) -> int:
    """Forget the sessions past their absolute expiry or idle too long (run at each sign-in)."""
    now = datetime.now(UTC)
    status: str = await conn.execute("DELETE FROM console_sessions WHERE expires_at <= $1 OR last_seen_at <= $2",
                                     now, now - idle)
    return int(status.split()[-1])


async def close_session(conn: asyncpg.Connection, session: str) -> None:
    await conn.execute("DELETE FROM console_sessions WHERE session_hash = $1", digest(session))
