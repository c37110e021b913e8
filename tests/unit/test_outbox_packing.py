"""The packed outbox row gives back exactly the records put in, in order."""

from __future__ import annotations

import struct

from hypothesis import given
from hypothesis import strategies as st

from workers.runtime.outbox import FORMAT_HEADERS, FORMAT_PLAIN, pack_records, unpack_records
from workers.runtime.publishing import OutgoingRecord

records = st.builds(
    OutgoingRecord,
    topic=st.text(min_size=1, max_size=60),
    key=st.none() | st.binary(max_size=300),
    value=st.binary(max_size=3000),
    record_id=st.none() | st.text(min_size=1, max_size=300),
    source_partition=st.just(2),
    extra_headers=st.lists(st.tuples(st.text(min_size=1, max_size=40), st.binary(max_size=200)),
                           max_size=8).map(tuple),
)


def pack_hand_packed(batch: list[OutgoingRecord], packing: int) -> bytes:
    """Rows as formats 1 and 2 were written, written here independently of the reader under test."""
    def text(value: str) -> bytes:
        return struct.pack(">H", len(value.encode())) + value.encode()

    def blob(value: bytes | None) -> bytes:
        return struct.pack(">i", -1) if value is None else struct.pack(">i", len(value)) + value

    parts = []
    for record in batch:
        parts += [text(record.topic), blob(record.key), blob(record.value), text(record.record_id or "")]
        if packing == FORMAT_HEADERS:
            parts.append(struct.pack(">H", len(record.extra_headers)))
            parts += [text(name) + blob(value) for name, value in record.extra_headers]
    return b"".join(parts)


@given(st.lists(records, max_size=30))
def test_packed_records_round_trip_in_order(batch: list[OutgoingRecord]) -> None:
    assert unpack_records(pack_records(batch), 2) == batch


def test_an_empty_batch_packs_to_nothing() -> None:
    assert pack_records([]) == b""
    assert unpack_records(b"", 0) == []


@given(st.lists(records, max_size=10))
def test_rows_written_before_headers_were_packed_still_read(batch: list[OutgoingRecord]) -> None:
    """Rows of format 1 (before migration 004) carry no headers beyond the record id."""
    plain = [OutgoingRecord(r.topic, r.key, r.value, r.record_id, r.source_partition) for r in batch]
    assert unpack_records(pack_hand_packed(plain, FORMAT_PLAIN), 2, FORMAT_PLAIN) == plain


@given(st.lists(records, max_size=10))
def test_rows_hand_packed_with_headers_still_read(batch: list[OutgoingRecord]) -> None:
    """Rows of format 2 (before MessagePack): left by a crash, read by the upgraded worker."""
    assert unpack_records(pack_hand_packed(batch, FORMAT_HEADERS), 2, FORMAT_HEADERS) == batch
