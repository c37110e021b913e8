"""Known customers written straight into PostgreSQL, for the benchmarks and the tests that need a space
of many customers at once (no worker writes this way: the service's states come from commands)."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg
import orjson

from models import STATE_FIELDS, CustomerState


async def copy_states(conn: asyncpg.Connection, states: Sequence[CustomerState]) -> None:
    """Many states at once with COPY."""
    def value(state: CustomerState, name: str) -> object:
        field = getattr(state, name)
        return orjson.dumps(field, option=orjson.OPT_UTC_Z).decode() if name == "scheduled" else field

    await conn.copy_records_to_table(
        "customer_state", columns=list(STATE_FIELDS),
        records=[tuple(value(state, name) for name in STATE_FIELDS) for state in states])
