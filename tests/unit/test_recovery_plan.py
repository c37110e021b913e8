"""The pure decisions of disaster recovery (suspensions/recovery/plan.py)."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from models import event_id_for
from suspensions.recovery import plan
from suspensions.recovery.plan import Fate, Kind
from tests.integration import builders
from workers.runtime.publishing import OutgoingRecord


@pytest.mark.parametrize(("database", "topic", "kind"), [
    (None, 3, Kind.MISSING_IN_DATABASE),
    (2, None, Kind.MISSING_ON_TOPIC),
    (2, 3, Kind.OLDER),
    (4, 3, Kind.NEWER),
])
def test_a_difference_is_named_by_the_versions(database: int | None, topic: int | None, kind: Kind) -> None:
    difference = plan.classify("c1", database, topic)
    assert difference == plan.Difference("c1", kind, database, topic)


def test_equal_versions_are_no_difference() -> None:
    assert plan.classify("c1", 3, 3) is None
    assert plan.count_by_kind([plan.Difference("a", Kind.OLDER, 1, 2), plan.Difference("b", Kind.OLDER, 1, 3),
                               plan.Difference("c", Kind.NEWER, 4, 3)]) == {
        "missing_in_database": 0, "missing_on_topic": 0, "older": 2, "newer": 1}


def _state(customer: str, version: int, **fields: object) -> bytes:
    return orjson.dumps({"space_id": "s", "customer_id": customer, "suspended": True, "reasons": ["manual"],
                         "suspended_at": "2026-12-01T10:00:00Z", "lifted_at": None, "version": version,
                         "updated_at": "2026-12-01T10:00:00Z", "last_command_id": f"cmd-{version}",
                         "scheduled": [], **fields})


def test_a_state_record_is_written_as_it_is_and_only_its_latest_version() -> None:
    records = [plan.parse_state(b"a", _state("a", 1)), plan.parse_state(b"a", _state("a", 3)),
               plan.parse_state(b"a", _state("a", 2)), plan.parse_state(b"b", _state("b", 1))]
    latest = plan.latest_states(record for record in records if record is not None)
    assert {(state.customer_id, state.version) for state in latest} == {("a", 3), ("b", 1)}
    assert next(state for state in latest if state.customer_id == "a").value == _state("a", 3)


@pytest.mark.parametrize("value", [
    None,  # a tombstone: the contract has none on this topic
    b"not json", b"[1]", _state("a", 0), orjson.dumps({"customer_id": "a", "version": 1}),
])
def test_what_is_not_a_state_is_skipped(value: bytes | None) -> None:
    assert plan.parse_state(b"a", value) is None


def test_a_state_under_another_key_is_skipped() -> None:
    assert plan.parse_state(b"b", _state("a", 1)) is None
    parsed = plan.parse_state(b"a", _state("a", 1, scheduled=[{"schedule_id": "x"}]))
    assert parsed is not None and parsed.schedules == 1


def _event(kind: str, before: list[str], after: list[str], version: int = 2, **fields: object) -> dict[str, object]:
    event: dict[str, object] = {
        "event_id": event_id_for("c1", version), "type": kind, "occurred_at": "2026-12-01T10:00:00.5Z",
        "space_id": "s", "customer_id": "c1", "version": version, "reasons_before": before, "reasons_after": after,
        "actor": "admin:ana", "source": "operator_cli", "command_id": "cmd-9", "cause": None, "note": "n",
        "missed_invoices": None, "invoices_billed": None, "invoices_waived": None, "schedules": None,
        "fired_delay_ms": None}
    event.update(fields)
    return event


@pytest.mark.parametrize(("kind", "before", "after", "fields", "action", "reason"), [
    ("admitted", [], [], {}, "register", "signup"),
    ("suspended", [], ["plan"], {}, "suspend", "plan"),
    ("reason_added", ["plan"], ["plan", "crm_stage"], {}, "suspend", "crm_stage"),
    ("reason_removed", ["plan", "overdue"], ["plan"], {"source": "overdue_rule"}, "release", "overdue"),
    ("lifted", ["overdue"], [], {"source": "overdue_rule"}, "release", "overdue"),
    ("lifted", ["plan", "manual"], [], {"missed_invoices": "waive"}, "lift", "manual"),
    ("lift_scheduled", ["plan"], ["plan"], {}, "lift", "manual"),
    ("schedule_cancelled", [], [], {}, "cancel_schedule", "manual"),
])
def test_a_history_row_is_read_from_its_event(kind: str, before: list[str], after: list[str],
                                              fields: dict[str, object], action: str, reason: str) -> None:
    event = plan.parse_event(orjson.dumps(_event(kind, before, after, **fields)))
    assert event is not None
    row = plan.history_from_event(event)
    assert (row.action, row.reason, row.outcome, row.version_after, row.command_id) == (
        action, reason, "changed", 2, "cmd-9")
    assert row.suspended_after is bool(after)
    assert row.applied_at == row.issued_at == datetime(2026, 12, 1, 10, 0, 0, 500_000, tzinfo=UTC)
    assert (row.source_partition, row.source_offset) == (plan.UNKNOWN_POSITION, plan.UNKNOWN_POSITION)
    assert row.missed_invoices == (fields.get("missed_invoices") or "bill" if action in ("lift", "release") else None)


def test_a_fired_schedule_keeps_its_id_and_delay() -> None:
    entry = {"schedule_id": "sch-1", "action": "lift", "at": "2026-12-01T09:00:00Z", "missed_invoices": "bill",
             "actor": "admin:ana", "note": None}
    row = plan.history_from_event(_event("lifted", ["manual"], [], schedules=[entry], fired_delay_ms=120,
                                         source="schedule", cause={"topic": "t", "event_id": "e"}))
    assert (row.schedule_id, row.fired_delay_ms, row.cause_topic, row.cause_event_id) == ("sch-1", 120, "t", "e")
    scheduled = plan.history_from_event(_event("lift_scheduled", [], [], schedules=[entry]))
    assert scheduled.schedule_id is None
    assert scheduled.scheduled_at == datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def test_an_event_twice_is_one_change_and_what_is_not_an_event_is_skipped() -> None:
    first = _event("suspended", [], ["plan"])
    assert plan.unique_events([first, dict(first), _event("lifted", ["plan"], [], version=3)]) == [
        first, _event("lifted", ["plan"], [], version=3)]
    assert plan.parse_event(b"{}") is None
    assert plan.parse_event(orjson.dumps(_event("suspended", [], ["plan"], occurred_at="yesterday"))) is None
    assert plan.parse_event(None) is None


def _out(topic: str, customer: str, version: int) -> OutgoingRecord:
    value = orjson.dumps({"customer_id": customer, "version": version})
    return OutgoingRecord(topic, customer.encode(), value, f"{customer}:{version}", 0)


def test_an_outbox_row_already_on_the_topic_is_deleted() -> None:
    row = [_out("suspension.state", "a", 3), _out("suspension.events", "a", 3),
           _out("invoice.jobs.accepted", "a", 0)]
    assert plan.outbox_decision(row, {"a": 3}).fate is Fate.DELETE  # published as it is
    assert plan.outbox_decision(row, {"a": 5}).fate is Fate.DELETE  # superseded: never publish it after v5


def test_an_outbox_row_not_on_the_topic_is_kept() -> None:
    row = [_out("suspension.state", "a", 3), _out("suspension.events", "a", 3)]
    assert plan.outbox_decision(row, {"a": 2}) == plan.OutboxDecision(Fate.KEEP, row)
    assert plan.outbox_decision(row, {}).fate is Fate.KEEP  # a first version never published
    letter = [_out("deadletter", "x", 0)]
    assert plan.outbox_decision(letter, {"x": 9}).fate is Fate.KEEP


def test_a_partly_published_row_keeps_only_what_the_topic_lacks() -> None:
    old_a, new_b = _out("suspension.state", "a", 3), _out("suspension.state", "b", 4)
    job = _out("invoice.jobs.accepted", "b", 0)
    decision = plan.outbox_decision([old_a, new_b, job], {"a": 3, "b": 3})
    assert decision == plan.OutboxDecision(Fate.TRIM, [new_b, job])
    assert plan.outbox_customers([old_a, new_b, job]) == {"a", "b"}


@pytest.mark.parametrize(("committed", "log_start", "last_change", "expected"), [
    (None, 0, None, 0),  # never committed, nothing changed: read it all
    (None, 0, 41, 42),  # never committed: just after the last change
    (10, 0, 41, 42),  # committed before the last change: a no-op read again there could change a state
    (50, 0, 41, 50),  # committed further on: everything before it is published
    (None, 100, None, 100),  # the log's start moved on (retention)
    (5, 100, 41, 100),
])
def test_the_group_resumes_after_the_last_change(committed: int | None, log_start: int, last_change: int | None,
                                                 expected: int) -> None:
    assert plan.resume_offset(committed, log_start, last_change) == expected


def test_a_command_id_from_its_value() -> None:
    command = builders.command("c-9", "s-1", command_id="c-1")
    assert plan.parse_command_id(orjson.dumps(command)) == "c-1"
    # What the state worker dead-letters without recording its id has none here either.
    assert plan.parse_command_id(b'{"command_id": "c-1"}') is None
    assert plan.parse_command_id(orjson.dumps({**command, "action": "explode"})) is None
    assert plan.parse_command_id(b"nope") is None
    assert plan.parse_command_id(None) is None
