"""The unit of work of one batch: its transaction, the partition lock, the stores it reads and writes, and
its outbox rows, in one object (cosmicpython's unit of work).

    async with UnitOfWork(pool, source_topic, partitions, max_record_bytes) as uow:
        records = await handler.handle(uow, batch)
        row_ids = await uow.commit(records, published_row_ids)

Entering takes a connection, opens the transaction and waits for the source partitions' lock; ``commit``
checks every record's size, writes the outbox rows and commits; leaving without ``commit`` (an error)
rolls everything back. The state worker's batch is four round trips (issue 24): ``BEGIN``; the lock, its
states and its processed ids in one call (``lock_on_enter=False``, then ``read_for_commands``); its state,
history, processed ids, schedules and outbox rows in one statement (``write_applied`` only stages them
for ``commit``); ``COMMIT``. Handlers see only ``BatchStore``, so they run as well against an in-memory store
in the unit tests as against PostgreSQL here.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from types import TracebackType
from typing import Protocol

import asyncpg
from asyncpg.pool import PoolConnectionProxy
from asyncpg.transaction import Transaction

from models import CustomerState
from workers.runtime.db import invoices, repository
from workers.runtime.db.invoices import InvoiceRow, RuleSetting
from workers.runtime.db.repository import DecisionRow, HistoryRow, ScheduleRow
from workers.runtime.outbox import lock_source_partitions, partition_lock_keys, replace_rows
from workers.runtime.poison import check_sizes
from workers.runtime.publishing import OutgoingRecord


class BatchStore(Protocol):
    """What a batch handler reads and writes, inside the unit of work's transaction."""

    async def lock_states(self, customer_ids: Iterable[str], *, share: bool = False) -> dict[str, CustomerState]: ...
    async def read_for_commands(self, customer_ids: Iterable[str],
                                command_ids: Iterable[str]) -> tuple[dict[str, CustomerState], set[str]]:
        """The customers' states, locked, and which of the command ids were processed before (read after
        the lock, so ids a concurrent owner committed are among them)."""
    async def write_applied(self, states: Sequence[CustomerState], history: Sequence[HistoryRow],
                            outcomes: Sequence[tuple[str, str]], at: datetime, schedules: Sequence[ScheduleRow]) -> None:
        """A batch's new states, history rows, processed ids (with their outcomes) and schedules; written by the
        time the unit of work commits."""
    async def settle_dropped_jobs(self, settlements: dict[str, tuple[str, str]],
                                  at: datetime) -> dict[str, list[str]]: ...
    async def decided_jobs(self, job_ids: Iterable[str]) -> set[str]: ...
    async def insert_decisions(self, rows: Sequence[DecisionRow]) -> None: ...
    async def invoices_of(self, customer_ids: Iterable[str]) -> dict[str, dict[str, InvoiceRow]]: ...
    async def write_invoices(self, rows: Sequence[InvoiceRow]) -> None: ...
    async def rule_settings(self, space_ids: Iterable[str]) -> dict[str, RuleSetting]: ...


class UnitOfWork:
    """One batch's transaction in PostgreSQL (a ``BatchStore``)."""

    def __init__(self, pool: asyncpg.Pool, source_topic: str, source_partitions: Iterable[int],
                 max_record_bytes: int, *, lock_on_enter: bool = True) -> None:
        self._pool = pool
        self._source_topic = source_topic
        self._partitions = sorted(set(source_partitions))
        self._max_record_bytes = max_record_bytes
        # False: the lock is taken by the first read (``read_for_commands``), or before any other statement.
        self._lock_on_enter = lock_on_enter
        self._locked = False
        self._conn: PoolConnectionProxy | None = None
        self._transaction: Transaction | None = None
        self._applied: tuple[str, list[object]] = ("", [])  # staged writes: common table expressions, arguments

    async def __aenter__(self) -> UnitOfWork:
        self._conn = await self._pool.acquire()
        try:
            transaction = self._conn.transaction()
            await transaction.start()
            self._transaction = transaction
            if self._lock_on_enter:
                await self._lock()
        except BaseException as error:
            await self._release(error)
            raise
        return self

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None,
                        traceback: TracebackType | None) -> None:
        await self._release(error)

    async def commit(self, records: Sequence[OutgoingRecord], published_ids: Sequence[int]) -> list[int]:
        """Store the records to publish (and delete the rows already published), then commit: all of it or,
        for a record larger than the broker takes (``RecordTooLarge``), none. Returns the new row ids."""
        check_sizes(records, self._max_record_bytes)
        await self._lock()
        ids = await replace_rows(self.conn, self._source_topic, records, published_ids, *self._applied)
        transaction, self._transaction = self._transaction, None  # a failed commit is not rolled back again
        assert transaction is not None
        await transaction.commit()
        return ids

    @property
    def conn(self) -> PoolConnectionProxy:
        if self._conn is None:
            raise RuntimeError("the unit of work is not entered")
        return self._conn

    async def _lock(self) -> None:
        """Two owners of a partition at once (one lost it without knowing yet) take turns here: first in the
        transaction, so the statements after it see what the other committed."""
        if not self._locked:
            await lock_source_partitions(self.conn, self._source_topic, self._partitions)
            self._locked = True

    def _lock_keys(self) -> list[str]:
        """The keys of the lock for ``state_batch_read`` to take, or none when it is held already."""
        if self._locked:
            return []
        self._locked = True  # by the call these keys go with: if it fails, the transaction is rolled back
        return partition_lock_keys(self._source_topic, self._partitions)

    async def _release(self, error: BaseException | None = None) -> None:
        """Roll back what was not committed, and give the connection back."""
        conn, transaction, self._conn, self._transaction = self._conn, self._transaction, None, None
        if conn is None:
            return
        if isinstance(error, TimeoutError):
            # No answer in time (a hung server): the connection is dropped, which ends the transaction on the
            # server; rolling back or handing it back would wait again, up to the command timeout each.
            conn.terminate()
        try:
            if transaction is not None and not conn.is_closed():
                await transaction.rollback()
        finally:
            await self._pool.release(conn)

    # --- the stores (``BatchStore``) ---------------------------------------------------------------

    async def lock_states(self, customer_ids: Iterable[str], *, share: bool = False) -> dict[str, CustomerState]:
        await self._lock()
        return await repository.lock_states(self.conn, customer_ids, share=share)

    async def read_for_commands(self, customer_ids: Iterable[str],
                                command_ids: Iterable[str]) -> tuple[dict[str, CustomerState], set[str]]:
        return await repository.read_for_commands(self.conn, self._lock_keys(), customer_ids, command_ids)

    async def write_applied(self, states: Sequence[CustomerState], history: Sequence[HistoryRow],
                            outcomes: Sequence[tuple[str, str]], at: datetime, schedules: Sequence[ScheduleRow]) -> None:
        if states or history or outcomes or schedules:
            self._applied = (repository.APPLIED_CTES,
                             repository.applied_arguments(states, history, outcomes, at, schedules))

    async def settle_dropped_jobs(self, settlements: dict[str, tuple[str, str]],
                                  at: datetime) -> dict[str, list[str]]:
        await self._lock()
        return await repository.settle_dropped_jobs(self.conn, settlements, at)

    async def decided_jobs(self, job_ids: Iterable[str]) -> set[str]:
        await self._lock()
        return await repository.decided_jobs(self.conn, job_ids)

    async def insert_decisions(self, rows: Sequence[DecisionRow]) -> None:
        await self._lock()
        await repository.insert_decisions(self.conn, rows)

    async def invoices_of(self, customer_ids: Iterable[str]) -> dict[str, dict[str, InvoiceRow]]:
        await self._lock()
        return await invoices.invoices_of(self.conn, customer_ids)

    async def write_invoices(self, rows: Sequence[InvoiceRow]) -> None:
        await self._lock()
        await invoices.write_invoices(self.conn, rows)

    async def rule_settings(self, space_ids: Iterable[str]) -> dict[str, RuleSetting]:
        await self._lock()
        return await invoices.rule_settings(self.conn, space_ids)
