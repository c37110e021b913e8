"""The unit of work of one batch: its transaction, the partition lock, the stores it reads and writes, and
its outbox rows, in one object (cosmicpython's unit of work).

    async with UnitOfWork(pool, source_topic, partitions, max_record_bytes) as uow:
        records = await handler.handle(uow, batch)
        row_ids = await uow.commit(records, published_row_ids)

Entering takes a connection, opens the transaction and waits for the source partitions' lock; ``commit``
checks every record's size, writes the outbox rows and commits; leaving without ``commit`` (an error)
rolls everything back. Handlers see only ``BatchStore``, so they run as well against an in-memory store
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
from workers.runtime.outbox import lock_source_partitions, replace_rows
from workers.runtime.poison import check_sizes
from workers.runtime.publishing import OutgoingRecord


class BatchStore(Protocol):
    """What a batch handler reads and writes, inside the unit of work's transaction."""

    async def lock_states(self, customer_ids: Iterable[str], *, share: bool = False) -> dict[str, CustomerState]: ...
    async def processed_among(self, command_ids: Iterable[str]) -> set[str]: ...
    async def write_applied(self, states: Sequence[CustomerState], history: Sequence[HistoryRow],
                            outcomes: Sequence[tuple[str, str]], at: datetime) -> None: ...
    async def write_schedules(self, rows: Sequence[ScheduleRow]) -> None: ...
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
                 max_record_bytes: int) -> None:
        self._pool = pool
        self._source_topic = source_topic
        self._partitions = sorted(set(source_partitions))
        self._max_record_bytes = max_record_bytes
        self._conn: PoolConnectionProxy | None = None
        self._transaction: Transaction | None = None

    async def __aenter__(self) -> UnitOfWork:
        self._conn = await self._pool.acquire()
        try:
            transaction = self._conn.transaction()
            await transaction.start()
            self._transaction = transaction
            # Two owners of a partition at once (one lost it without knowing yet) take turns here.
            await lock_source_partitions(self._conn, self._source_topic, self._partitions)
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
        ids = await replace_rows(self.conn, self._source_topic, records, published_ids)
        transaction, self._transaction = self._transaction, None  # a failed commit is not rolled back again
        assert transaction is not None
        await transaction.commit()
        return ids

    @property
    def conn(self) -> PoolConnectionProxy:
        if self._conn is None:
            raise RuntimeError("the unit of work is not entered")
        return self._conn

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
        return await repository.lock_states(self.conn, customer_ids, share=share)

    async def processed_among(self, command_ids: Iterable[str]) -> set[str]:
        return await repository.processed_among(self.conn, command_ids)

    async def write_applied(self, states: Sequence[CustomerState], history: Sequence[HistoryRow],
                            outcomes: Sequence[tuple[str, str]], at: datetime) -> None:
        await repository.write_applied(self.conn, states, history, outcomes, at)

    async def write_schedules(self, rows: Sequence[ScheduleRow]) -> None:
        await repository.write_schedules(self.conn, rows)

    async def settle_dropped_jobs(self, settlements: dict[str, tuple[str, str]],
                                  at: datetime) -> dict[str, list[str]]:
        return await repository.settle_dropped_jobs(self.conn, settlements, at)

    async def decided_jobs(self, job_ids: Iterable[str]) -> set[str]:
        return await repository.decided_jobs(self.conn, job_ids)

    async def insert_decisions(self, rows: Sequence[DecisionRow]) -> None:
        await repository.insert_decisions(self.conn, rows)

    async def invoices_of(self, customer_ids: Iterable[str]) -> dict[str, dict[str, InvoiceRow]]:
        return await invoices.invoices_of(self.conn, customer_ids)

    async def write_invoices(self, rows: Sequence[InvoiceRow]) -> None:
        await invoices.write_invoices(self.conn, rows)

    async def rule_settings(self, space_ids: Iterable[str]) -> dict[str, RuleSetting]:
        return await invoices.rule_settings(self.conn, space_ids)
