"""The transactional outbox: records to publish, committed with the state they describe.

Everything about it lives here: the packed row format, its SQL, the relay that publishes the
rows, and the deferred delete of published rows. A worker commits a batch's effects and its
outgoing records in one transaction (``workers/runtime/db/unit_of_work.py``, which writes the rows
with ``replace_rows``), publishes them (``publish``), and marks them published; their rows are
deleted by the next batch's outbox statement, or when the worker is idle (``delete_published``).
Rows left by a crash are published by whoever owns the source partition next (``publish_left_over``), before it consumes; consumers deduplicate by record id.
"""

from __future__ import annotations

import contextlib
import struct
from collections.abc import Iterable, Iterator, Sequence

import asyncpg
import msgpack
from aiokafka import AIOKafkaProducer

from workers.runtime.publishing import OutgoingRecord, publish_all

_U16 = struct.Struct(">H")
_I32 = struct.Struct(">i")


# --- the packed row format --------------------------------------------------------------------


FORMAT_PLAIN = 1  # rows written before migration 004: no headers beyond the record id
FORMAT_HEADERS = 2  # hand-packed rows with headers, written before MessagePack
FORMAT_MSGPACK = 3  # every row written now
# Read by this release and, for a rolling upgrade or a rollback, by the previous and the next: a new format is
# read from one release and written from the next (docs/operations.md, "Rolling upgrades").
READABLE_FORMATS = (FORMAT_PLAIN, FORMAT_HEADERS, FORMAT_MSGPACK)


class UnknownOutboxFormat(ValueError):
    """A row of a format newer than this release reads: it must not be read as an older one."""


def pack_records(records: Iterable[OutgoingRecord]) -> bytes:
    """Records to publish, in order, as one value: a MessagePack array of [topic, key, value, record id,
    headers] per record. One outbox row per batch and source partition costs one insert and one delete,
    where a row per record cost one of each per record."""
    rows = [(r.topic, r.key, r.value, r.record_id, r.extra_headers) for r in records]
    packed: bytes = msgpack.packb(rows) if rows else b""
    return packed


def unpack_records(packed: bytes, source_partition: int, packing: int = FORMAT_MSGPACK) -> list[OutgoingRecord]:
    """The inverse of ``pack_records``; rows of the older formats too. A row of an unknown format is refused
    (0.1.0 read it as format 1, publishing garbage or failing on a length), never published."""
    if packing not in READABLE_FORMATS:
        raise UnknownOutboxFormat(f"outbox row format {packing} is newer than this release reads "
                                  f"({', '.join(map(str, READABLE_FORMATS))}): run the release that wrote it")
    if packing != FORMAT_MSGPACK:
        return _unpack_hand_packed(packed, source_partition, packing)
    if not packed:
        return []
    return [OutgoingRecord(topic, key, value, record_id, source_partition, extra_headers=headers)
            for topic, key, value, record_id, headers in msgpack.unpackb(packed, use_list=False)]


def _read_field(packed: bytes, at: int, prefix: struct.Struct) -> tuple[bytes | None, int]:
    (size,) = prefix.unpack_from(packed, at)
    at += prefix.size
    if size < 0:
        return None, at
    return packed[at:at + size], at + size


def _unpack_hand_packed(packed: bytes, source_partition: int, packing: int) -> list[OutgoingRecord]:
    """Rows of formats 1 and 2: per record a u16-prefixed topic, an i32-prefixed key (-1 for none), an
    i32-prefixed value and a u16-prefixed record id (empty for none), then (format 2) a u16 count of
    other headers, each a u16-prefixed name and an i32-prefixed value."""
    records: list[OutgoingRecord] = []
    at = 0
    while at < len(packed):
        topic, at = _read_field(packed, at, _U16)
        key, at = _read_field(packed, at, _I32)
        value, at = _read_field(packed, at, _I32)
        record_id, at = _read_field(packed, at, _U16)
        if topic is None or value is None or record_id is None:
            raise ValueError("corrupt outbox row: a length-prefixed field is missing")
        headers: list[tuple[str, bytes]] = []
        if packing == FORMAT_HEADERS:
            (count,) = _U16.unpack_from(packed, at)
            at += _U16.size
            for _ in range(count):
                name, at = _read_field(packed, at, _U16)
                header, at = _read_field(packed, at, _I32)
                if name is None or header is None:
                    raise ValueError("corrupt outbox row: a header is missing")
                headers.append((name.decode(), header))
        records.append(OutgoingRecord(topic.decode(), key, value, record_id.decode() or None, source_partition,
                                      extra_headers=tuple(headers)))
    return records


# --- SQL --------------------------------------------------------------------------------------


async def lock_source_partitions(conn: asyncpg.Connection, source_topic: str, partitions: Iterable[int]) -> None:
    """Wait until no other transaction applies a batch of these source partitions.

    Two owners of a partition at once (one lost it but does not know yet) would otherwise both apply
    a batch: a customer with no row yet has nothing to lock, and neither sees the other's uncommitted
    work. Its own statement, first in the transaction, so the next ones see what the other committed.
    A transaction-level advisory lock per partition: a handful per batch, whatever its size.
    """
    keys = partition_lock_keys(source_topic, partitions)
    await conn.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended(key, 0)) FROM (SELECT unnest($1::text[]) AS key ORDER BY 1) AS k",
        keys,
    )


def partition_lock_keys(source_topic: str, partitions: Iterable[int]) -> list[str]:
    """The names of the source partitions' locks, in the order they are taken (``state_batch_read``, migration
    013, takes the same ones)."""
    return sorted({f"{source_topic}:{partition}" for partition in partitions})


async def replace_rows(conn: asyncpg.Connection, source_topic: str, records: Sequence[OutgoingRecord],
                       published_ids: Sequence[int], before: str = "", before_arguments: Sequence[object] = ()) -> list[int]:
    """Delete the rows already published and insert this batch's records, one row per source partition
    and in order, in one statement; returns the new row ids. ``before``: common table expressions of the
    batch's own writes (parameters ``before_arguments``, numbered from $1), run in the same statement."""
    if not records and not published_ids and not before:
        return []
    by_partition: dict[int, list[OutgoingRecord]] = {}
    for record in records:
        by_partition.setdefault(record.source_partition, []).append(record)
    n = len(before_arguments)
    rows = await conn.fetch(
        f"WITH {before + ',' if before else ''} published AS (DELETE FROM outbox WHERE id = ANY(${n + 4}::bigint[])) "
        f"INSERT INTO outbox (source_topic, source_partition, records, format) "
        f"SELECT ${n + 1}, *, {FORMAT_MSGPACK} FROM unnest(${n + 2}::int[], ${n + 3}::bytea[]) RETURNING id",
        *before_arguments, source_topic, list(by_partition),
        [pack_records(group) for group in by_partition.values()], list(published_ids),
    )
    return [row["id"] for row in rows]


async def pending_rows(
    conn: asyncpg.Connection, source_topic: str, partitions: Iterable[int], published: Iterable[int] = ()
) -> tuple[list[int], list[OutgoingRecord]]:
    """Rows left unpublished for these source partitions (all but the ``published`` ones, whose delete is
    still to come): their ids, and their records in order."""
    rows = await conn.fetch(
        "SELECT id, source_partition, records, format FROM outbox "
        "WHERE source_topic = $1 AND source_partition = ANY($2::int[]) AND id <> ALL($3::bigint[]) ORDER BY id",
        source_topic, list(partitions), list(published),
    )
    records = [record for row in rows
               for record in unpack_records(row["records"], row["source_partition"], row["format"])]
    return [row["id"] for row in rows], records


async def delete_rows(conn: asyncpg.Connection, ids: Sequence[int]) -> None:
    if ids:
        await conn.execute("DELETE FROM outbox WHERE id = ANY($1::bigint[])", list(ids))


# --- the relay --------------------------------------------------------------------------------


class Outbox:
    """The outbox rows of one worker's source topic, and the relay that publishes them."""

    def __init__(self, source_topic: str, pool: asyncpg.Pool, producer: AIOKafkaProducer) -> None:
        self.source_topic = source_topic
        self._pool = pool
        self._producer = producer
        # Rows already published, deleted in the next batch's transaction (or when idle): one round
        # trip less per batch; a crash before that only re-publishes them.
        self._published_ids: list[int] = []
        # Published rows a transaction is deleting (``published_to_delete``), visible to others until it commits.
        self._deleting: set[int] = set()

    @property
    def has_published_rows(self) -> bool:
        return bool(self._published_ids)

    async def publish(self, records: Sequence[OutgoingRecord]) -> None:
        if records:
            await publish_all(self._producer, records)

    def mark_published(self, ids: Sequence[int]) -> None:
        self._published_ids.extend(ids)

    async def delete_published(self) -> None:
        with self.published_to_delete() as ids:
            if ids:
                async with self._pool.acquire() as conn:
                    await delete_rows(conn, ids)

    async def publish_left_over(self, partitions: Sequence[int]) -> list[OutgoingRecord]:
        """Publish the rows left for these source partitions: by an earlier owner, or by an attempt of ours
        whose commit went through unseen (a dropped connection). Once published they are deleted as ours are
        (by the next batch's statement, or when idle), and never read again meanwhile: a delete that fails, or
        one another batch's transaction has not committed yet, does not publish them a second time."""
        await self.delete_published()  # ours, already published: not again
        async with self._pool.acquire() as conn:
            ids, pending = await pending_rows(conn, self.source_topic, partitions,
                                              [*self._published_ids, *self._deleting])
        if ids:
            await self.publish(pending)
            self.mark_published(ids)
        return pending

    @contextlib.contextmanager
    def published_to_delete(self) -> Iterator[list[int]]:
        """Take the published row ids for deletion; they are put back if the deletion fails."""
        ids, self._published_ids = self._published_ids, []
        self._deleting.update(ids)
        try:
            yield ids
        except BaseException:
            self._published_ids.extend(ids)
            raise
        finally:
            self._deleting.difference_update(ids)
