"""Property-based: generated records through the decoders and the rules never escape as crashes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from models import (
    Action,
    CrmOpportunityEvent,
    CustomerSignup,
    DecodeError,
    InvoiceJob,
    PlanChange,
    Reason,
    SuspensionCommand,
    decode,
    encode,
)
from workers.state.transitions import Outcome, plan_batch
from workers.triggers.app import EVENT_RULES, commands_for_record
from workers.triggers.rules import SettingsSnapshot

MODELS = [CustomerSignup, PlanChange, CrmOpportunityEvent, SuspensionCommand, InvoiceJob]
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=10), children, max_size=3),
    max_leaves=10,
)
FIELDS = ["event_id", "occurred_at", "space_id", "customer_id", "plan_id", "board_id", "stage_id", "opportunity_id",
          "command_id", "issued_at", "action", "reason", "actor", "note", "cause", "missed_invoices", "job_id",
          "contract_id", "period_start", "period_end", "amount", "currency"]
plausible = st.sampled_from(["2026-11-25T10:00:00Z", "2026-11-25", "suspend", "lift", "manual", "plan", "signup",
                             "crm_stage", "system", "admin:1", "bill", "waive", "EUR", "10.00", "c1", "s1"])
records = st.dictionaries(st.sampled_from(FIELDS), plausible | json_values, max_size=len(FIELDS))


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(raw=st.binary(max_size=200) | records.map(orjson.dumps))
def test_decoders_accept_or_raise_decode_error(raw: bytes) -> None:
    for model in MODELS:
        try:
            record = decode(model, raw)
        except DecodeError as error:
            assert str(error)
        else:
            assert decode(model, encode(record)) == record


@settings(max_examples=200)
@given(record=records, topic=st.sampled_from(sorted(EVENT_RULES)), matching_key=st.booleans(),
       other_key=st.binary(max_size=8))
def test_trigger_rules_never_crash(record: dict[str, object], topic: str, matching_key: bool,
                                   other_key: bytes) -> None:
    # The key is the record's own customer id most of the time, so the rules are reached, not only the key check.
    customer = record.get("customer_id")
    key = customer.encode("utf-8", "surrogatepass") if matching_key and isinstance(customer, str) else other_key
    raw = orjson.dumps(record)
    try:
        commands = commands_for_record(topic, key, raw, SettingsSnapshot())
    except DecodeError:
        return
    # No setting is on: only a signup gets a command, its decision not to suspend.
    assert [c.action for c in commands] == ([Action.REGISTER] if topic == "customer.signups" else [])


T0 = datetime(2026, 11, 25, tzinfo=UTC)
@st.composite
def commands(draw: st.DrawFn) -> SuspensionCommand:
    """Any command: now or scheduled (at, until), fired by a schedule, or cancelling one."""
    action = draw(st.sampled_from(list(Action)))
    issued_at = T0 + timedelta(seconds=draw(st.integers(0, 10_000)))
    fields: dict[str, object] = {}
    if action in (Action.SUSPEND, Action.LIFT):
        kind = draw(st.sampled_from(["now", "at", "fire"]))
        if kind == "at":
            fields["at"] = issued_at + timedelta(minutes=draw(st.integers(1, 600)))
        elif kind == "fire":
            fields["schedule_id"] = f"k{draw(st.integers(0, 30))}"
        if action is Action.SUSPEND and draw(st.booleans()):
            start = fields.get("at", issued_at)
            assert isinstance(start, datetime)
            fields["until"] = start + timedelta(minutes=draw(st.integers(1, 600)))
    elif action is Action.CANCEL_SCHEDULE:
        fields["schedule_id"] = draw(st.sampled_from([f"k{i}" for i in range(31)] + [f"k{i}:until" for i in range(31)]))
    return SuspensionCommand(
        command_id=f"k{draw(st.integers(0, 30))}", issued_at=issued_at, space_id=draw(st.sampled_from(["s1", "s1", "s2"])),
        customer_id=draw(st.sampled_from(["a", "b", "c"])), action=action, reason=draw(st.sampled_from(list(Reason))),
        actor="system", **fields)


@settings(max_examples=300)
@given(batch=st.lists(commands(), max_size=40))
def test_folding_any_batch_keeps_the_invariants(batch: list[SuspensionCommand]) -> None:
    plan = plan_batch({}, set(), list(enumerate(batch)), T0)
    seen: set[str] = set()
    versions: dict[str, int] = {}
    for applied in plan.applied:
        command, transition = applied.command, applied.transition
        if command.command_id in seen:
            assert transition.outcome is Outcome.DUPLICATE
            continue
        seen.add(command.command_id)
        state = transition.state
        if transition.outcome is Outcome.CHANGED:
            assert state is not None and state.version == versions.get(command.customer_id, 0) + 1
            versions[command.customer_id] = state.version
            assert state.suspended == bool(state.reasons)
            if command.action is Action.REGISTER:  # a decision never rewrites a known customer
                assert state.version == 1 and not state.suspended
            # Pending schedules: soonest first, at most one per action, a scheduling command never
            # changes the suspension now (unless it suspends now until a moment).
            assert [entry.at for entry in state.scheduled] == sorted(entry.at for entry in state.scheduled)
            actions = [entry.action for entry in state.scheduled]
            assert len(actions) == len(set(actions))
            if command.at is not None and applied.previous is not None:
                assert (state.suspended, state.reasons) == (applied.previous.suspended, applied.previous.reasons)
            assert len(set(state.reasons)) == len(state.reasons)
        elif transition.outcome is Outcome.REJECTED:
            assert state is not None and state.space_id != command.space_id
    for customer, state in plan.final_states.items():
        assert state.version == versions[customer]
