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
        "INSERT INTO console_sessions (session_hash, token_name, csrf, created_at, expires_at) "
        "VALUES ($1, $2, $3, $4, $5)", digest(session), principal.name, csrf, now, now + SESSION_LIFETIME)
    return session, csrf


async def session_principal(conn: asyncpg.Connection, session: str) -> tuple[Principal, str] | None:
    """The session's principal and form token, while the session is live and its token not revoked."""
    row = await conn.fetchrow(
        "SELECT t.name, t.role, t.spaces, s.csrf FROM console_sessions s JOIN api_tokens t ON t.name = s.token_name "
        "WHERE s.session_hash = $1 AND s.expires_at > $2 AND t.revoked_at IS NULL", digest(session),
        datetime.now(UTC))
    principal = _principal(row)
    return None if principal is None or row is None else (principal, row["csrf"])


async def close_session(conn: asyncpg.Connection, session: str) -> None:
    await conn.execute("DELETE FROM console_sessions WHERE session_hash = $1", digest(session))
