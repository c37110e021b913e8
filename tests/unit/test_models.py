"""The contract codec: strict types, unknown fields ignored, zones required, clear errors."""

from __future__ import annotations

import base64
import uuid

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from models import (
    CustomerSignup,
    DeadLetter,
    DecodeError,
    InvoiceJob,
    SuspensionCommand,
    SuspensionState,
    decode,
    encode,
)
from models.base import name_based_id

SIGNUP = {"event_id": "e1", "occurred_at": "2026-11-25T10:00:00Z", "space_id": "s1", "customer_id": "c1"}
COMMAND = {"command_id": "k1", "issued_at": "2026-11-25T10:00:00+01:00", "space_id": "s1", "customer_id": "c1",
           "action": "lift", "reason": "manual", "actor": "admin:7", "missed_invoices": "waive"}


def test_unknown_fields_are_ignored() -> None:
    signup = decode(CustomerSignup, orjson.dumps(SIGNUP | {"referrer": "x", "plan_id": "p"}))
    assert signup.plan_id == "p" and not hasattr(signup, "referrer")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"event_id": 5}, "event_id: Input should be a valid string"),
        ({"occurred_at": "2026-11-25T10:00:00"}, "occurred_at: Input should have timezone info"),
        ({"occurred_at": "yesterday"}, "occurred_at"),
        ({"space_id": ""}, "space_id: String should have at least 1 character"),
        ({"customer_id": None}, "customer_id: Input should be a valid string"),
    ],
)
def test_wrong_types_are_errors_not_coerced(change: dict, message: str) -> None:
    with pytest.raises(DecodeError, match=message):
        decode(CustomerSignup, orjson.dumps(SIGNUP | change))


def test_missing_field_is_named() -> None:
    record = {k: v for k, v in SIGNUP.items() if k != "space_id"}
    with pytest.raises(DecodeError, match="space_id: Field required"):
        decode(CustomerSignup, orjson.dumps(record))


@pytest.mark.parametrize("raw", [b"", b"nope", b"\xff\xfe", b"[" * 10_000, b"null", b"[]", None])
def test_not_an_object_is_a_decode_error(raw: bytes | None) -> None:
    with pytest.raises(DecodeError):
        decode(CustomerSignup, raw)


def test_command_rules() -> None:
    command = decode(SuspensionCommand, orjson.dumps(COMMAND))
    assert command.missed_invoices_or_default.value == "waive"
    for bad, message in (
        ({"actor": "bob"}, "actor"),
        ({"action": "suspend"}, "missed_invoices is only allowed on a lift"),
        ({"reason": "fraud"}, "reason: Input should be"),
        ({"cause": {"topic": "t"}}, "cause.event_id: Field required"),
    ):
        with pytest.raises(DecodeError, match=message):
            decode(SuspensionCommand, orjson.dumps(COMMAND | bad))


def test_invoice_job_money_and_dates() -> None:
    job = {"job_id": "j", "space_id": "s", "customer_id": "c", "contract_id": "k", "period_start": "2026-12-01",
           "period_end": "2026-12-31", "amount": "120.00", "currency": "EUR"}
    assert decode(InvoiceJob, orjson.dumps(job)).amount == "120.00"
    for bad in ({"amount": 120}, {"amount": "1e5"}, {"currency": "eur"}, {"period_end": "2026-02-30"}):
        with pytest.raises(DecodeError):
            decode(InvoiceJob, orjson.dumps(job | bad))


def test_state_round_trips() -> None:
    state = {"space_id": "s", "customer_id": "c", "suspended": True, "reasons": ["signup", "plan"],
             "suspended_at": "2026-11-25T10:00:00Z", "lifted_at": None, "version": 2,
             "updated_at": "2026-11-25T10:00:01Z", "last_command_id": "k"}
    decoded = decode(SuspensionState, orjson.dumps(state))
    assert decode(SuspensionState, encode(decoded)) == decoded
    assert orjson.loads(encode(decoded))["lifted_at"] is None


def test_dead_letter_keeps_the_original_bytes() -> None:
    text = DeadLetter.for_record(topic="t", partition=1, offset=2, key=b"k", value=b'{"a":1}', error="e", worker="w")
    assert text.value == '{"a":1}' and text.value_b64 is None
    binary = DeadLetter.for_record(topic="t", partition=1, offset=2, key=None, value=b"\xff\x00", error="e",
                                   worker="w")
    assert binary.value is None and base64.b64decode(binary.value_b64 or "") == b"\xff\x00"


@given(st.text(max_size=300))
def test_name_based_ids_are_uuid5_text(name: str) -> None:
    namespace = uuid.UUID("6f1c0f5e-7b7a-4c55-9d0e-5a1b2c3d4e5f")
    assert name_based_id(namespace, name) == str(uuid.uuid5(namespace, name))


def test_a_dead_letter_always_fits_a_record() -> None:
    """Whatever the record, its letter stays publishable: control characters go as base64 (never six
    bytes each as JSON escapes), a long key and a long reason are cut."""
    from models.deadletter import DeadLetter

    letter = DeadLetter.for_record(topic="t", partition=0, offset=7, key=b"k" * 5_000, value=b"\x01" * 600_000,
                                   error="e" * 9_000, worker="state")
    assert len(encode(letter)) < 640 * 1024
    assert letter.value is None and letter.value_b64 is not None and letter.original_size == 600_000
    assert letter.key is not None and len(letter.key) == 1024 and len(letter.error) < 4_100
    readable = DeadLetter.for_record(topic="t", partition=0, offset=8, key=None, value=b'{"note": "a\tb\r\n"}',
                                     error="bad", worker="state")
    assert readable.value == '{"note": "a\tb\r\n"}'  # tab and line ends keep a letter readable
