"""Poison records: input that no retry can apply, told apart from failures that a retry cures.

A record the contract accepts can still be refused further on: PostgreSQL rejects a value (a data
exception, a constraint), Python cannot represent it, or what it produces is larger than the broker
takes. Retrying such a batch fails forever and stops every record behind it, so the batch workers
split it until the refused record stands alone (``isolate``), dead-letter that record with the
error, and apply the rest exactly once. Transient failures (connection lost, deadlock, serialization)
are not poison: they are retried as before. Anything else (a TypeError, KeyError or AttributeError of a
bug, a missing table or column, a permission refused) is neither and still stops the worker, where its
log says why. A ValueError counts as the record's fault: in these workers it comes from the values
(pydantic's ValidationError, a UnicodeError, asyncpg refusing to encode an argument).
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import TypeVar

import asyncpg

from workers.runtime.publishing import OutgoingRecord

T = TypeVar("T")
R = TypeVar("R")


class RecordTooLarge(ValueError):
    """A record to publish that is larger than the configured limit: the broker would refuse it."""


# PostgreSQL's classes 22 (data exception: a NUL, a number out of range, an invalid datetime, a string
# too long), 23 (integrity constraint violation) and 54 (program limit exceeded, e.g. an index row too
# large), and asyncpg's own refusal to encode an argument (``asyncpg.exceptions._base.DataError``, a
# ValueError). Python's ValueError, OverflowError and RecursionError come from the record's values too.
_POISON: tuple[type[BaseException], ...] = (
    asyncpg.exceptions.DataError,
    asyncpg.exceptions.IntegrityConstraintViolationError,
    asyncpg.exceptions.ProgramLimitExceededError,
    ValueError,
    OverflowError,
    RecursionError,
)


def is_poison(error: BaseException) -> bool:
    """True when the failure comes from the records themselves, so retrying the same batch cannot help."""
    return isinstance(error, _POISON)


def cause(error: BaseException) -> str:
    """A bounded label for metrics and logs: the error's class (with its SQLSTATE for PostgreSQL), never
    its message, which may quote the record's values."""
    sqlstate = getattr(error, "sqlstate", None)
    return f"{type(error).__name__} ({sqlstate})" if isinstance(sqlstate, str) else type(error).__name__


def describe(error: BaseException) -> str:
    """The error in one line for the dead letter, which holds the record already."""
    lines = str(error).strip().splitlines()
    return f"{cause(error)}: {lines[0]}" if lines else cause(error)


def record_size(record: OutgoingRecord) -> int:
    """The bytes a record weighs on the wire, as the producer counts them, without the batch's framing."""
    return (len(record.value) + (len(record.key) if record.key is not None else 0)
            + sum(len(name) + len(value) for name, value in record.headers()))


_HEADROOM = 16 * 1024


def check_sizes(records: Iterable[OutgoingRecord], limit: int) -> None:
    """Raise ``RecordTooLarge`` for the first record above ``limit`` bytes (checked before the transaction
    that would store it commits, so nothing of its batch is applied)."""
    for record in records:
        if len(record.value) + _HEADROOM <= limit:  # nearly every record: headers and keys are small
            continue
        size = record_size(record)
        if size > limit:
            raise RecordTooLarge(f"the record to publish on {record.topic} would be {size} bytes, above the "
                                 f"limit of {limit} (SUSPENSIONS_KAFKA_MAX_RECORD_BYTES)")


def chunks(items: Sequence[T]) -> list[Sequence[T]]:
    """About the square root of ``len(items)`` consecutive chunks (order kept): one refused record among n
    costs about 2n records applied and 3·sqrt(n) transactions, where halving costs about 3n records."""
    count = len(items)
    size = min(math.isqrt(count - 1) + 1, (count + 1) // 2) if count > 1 else 1  # at least two chunks
    return [items[at:at + size] for at in range(0, len(items), size)]


async def isolate(
    records: Sequence[T],
    apply: Callable[[Sequence[T]], Awaitable[list[R]]],
    reject: Callable[[T, BaseException], Awaitable[list[R]]],
) -> list[R]:
    """Apply ``records`` at once; when that fails with poison, apply smaller consecutive chunks, down to
    the single record that fails, which ``reject`` handles (it dead-letters it). Returns what every
    successful ``apply`` and ``reject`` returned, in the records' order. Each call of ``apply`` must be
    all or nothing (one transaction), so a failed call leaves no trace."""
    try:
        return await apply(records)
    except Exception as error:
        if not is_poison(error):
            raise
        if len(records) == 1:
            return await reject(records[0], error)
    results: list[R] = []
    for chunk in chunks(records):
        results.extend(await isolate(chunk, apply, reject))
    return results
