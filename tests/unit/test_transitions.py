"""The state rules, without any service."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from models import Action, MissedInvoices, Reason, SuspensionCommand
from workers.state.transitions import CustomerState, Outcome, apply_command, plan_batch

T0 = datetime(2026, 11, 25, 10, tzinfo=UTC)
NOW = T0 + timedelta(hours=1)


def cmd(action: Action = Action.SUSPEND, reason: Reason = Reason.MANUAL, space: str = "s1", command_id: str = "k1",
        at: datetime = T0, missed: MissedInvoices | None = None) -> SuspensionCommand:
    return SuspensionCommand(command_id=command_id, issued_at=at, space_id=space, customer_id="c1", action=action,
                             reason=reason, actor="system", missed_invoices=missed)


def suspended(reasons: tuple[Reason, ...] = (Reason.SIGNUP,), version: int = 1) -> CustomerState:
    return CustomerState("c1", "s1", True, reasons, T0, None, version, T0, "k0")


def test_first_suspension_creates_version_one() -> None:
    transition = apply_command(None, cmd(reason=Reason.PLAN), NOW)
    assert transition.outcome is Outcome.CHANGED
    state = transition.state
    assert state is not None
    assert (state.suspended, state.reasons, state.version, state.suspended_at, state.lifted_at) == (
        True, (Reason.PLAN,), 1, T0, None)
    assert state.updated_at == NOW and state.last_command_id == "k1"


def test_second_reason_accumulates_and_keeps_suspended_at() -> None:
    transition = apply_command(suspended(), cmd(reason=Reason.CRM_STAGE, at=T0 + timedelta(days=1)), NOW)
    assert transition.outcome is Outcome.CHANGED and transition.state is not None
    assert transition.state.reasons == (Reason.SIGNUP, Reason.CRM_STAGE)
    assert transition.state.suspended_at == T0 and transition.state.version == 2


def test_same_reason_again_is_a_noop() -> None:
    current = suspended()
    transition = apply_command(current, cmd(reason=Reason.SIGNUP), NOW)
    assert transition.outcome is Outcome.NOOP and transition.state == current


def test_lift_ends_every_reason_and_settles_missed_invoices() -> None:
    current = suspended((Reason.SIGNUP, Reason.MANUAL), version=4)
    transition = apply_command(current, cmd(Action.LIFT, at=NOW), NOW)
    assert transition.outcome is Outcome.CHANGED and transition.state is not None
    assert (transition.state.suspended, transition.state.reasons, transition.state.version) == (False, (), 5)
    assert transition.state.lifted_at == NOW and transition.state.suspended_at == T0
    assert transition.settle_missed_invoices is MissedInvoices.BILL
    waived = apply_command(current, cmd(Action.LIFT, missed=MissedInvoices.WAIVE), NOW)
    assert waived.settle_missed_invoices is MissedInvoices.WAIVE


def test_lifting_someone_not_suspended_is_a_noop() -> None:
    assert apply_command(None, cmd(Action.LIFT), NOW).outcome is Outcome.NOOP
    lifted = CustomerState("c1", "s1", False, (), T0, T0, 2, T0, "k0")
    transition = apply_command(lifted, cmd(Action.LIFT), NOW)
    assert transition.outcome is Outcome.NOOP and transition.settle_missed_invoices is None


def test_resuspension_after_lift_keeps_lifted_at_and_bumps_version() -> None:
    lifted = CustomerState("c1", "s1", False, (), T0, T0, 2, T0, "k0")
    transition = apply_command(lifted, cmd(reason=Reason.PLAN, at=NOW), NOW)
    assert transition.state is not None
    assert (transition.state.version, transition.state.suspended_at, transition.state.lifted_at) == (3, NOW, T0)


def test_command_for_another_space_is_rejected_naming_both() -> None:
    transition = apply_command(suspended(), cmd(Action.LIFT, space="s2"), NOW)
    assert transition.outcome is Outcome.REJECTED
    assert transition.error is not None and "'s2'" in transition.error and "'s1'" in transition.error


def test_batch_applies_in_order_and_skips_duplicates() -> None:
    commands = [
        (0, cmd(command_id="a")),
        (1, cmd(command_id="a")),  # duplicate within the batch
        (2, cmd(command_id="old")),  # processed in an earlier batch
        (3, cmd(Action.LIFT, command_id="b")),
        (4, cmd(reason=Reason.PLAN, command_id="c")),
    ]
    plan = plan_batch({}, {"old"}, commands, NOW)
    assert [a.transition.outcome for a in plan.applied] == [
        Outcome.CHANGED, Outcome.DUPLICATE, Outcome.DUPLICATE, Outcome.CHANGED, Outcome.CHANGED]
    changed = [a.transition.state for a in plan.applied if a.transition.outcome is Outcome.CHANGED]
    assert [s.version for s in changed if s is not None] == [1, 2, 3]
    assert plan.final_states["c1"].version == 3 and plan.final_states["c1"].reasons == (Reason.PLAN,)


def test_hot_path_state_encoding_equals_the_contract_model() -> None:
    from models import SuspensionState, decode, encode, encode_state

    plus_one = datetime(2026, 11, 25, 10, 30, 0, 123456, tzinfo=UTC).astimezone(
        __import__("datetime").timezone(timedelta(hours=1)))
    for state in (
        CustomerState("c1", "s1", True, (Reason.SIGNUP, Reason.PLAN), plus_one, None, 3, NOW, "k"),
        CustomerState("c2", "s2", False, (), T0, NOW, 4, NOW, "k2"),
    ):
        fast = decode(SuspensionState, encode_state(state))
        assert fast == state.to_record()
        assert encode(fast) == encode(state.to_record())


def test_register_decides_an_unknown_customer_and_never_rewrites_a_known_one() -> None:
    first = apply_command(None, cmd(Action.REGISTER, Reason.SIGNUP), NOW)
    assert first.outcome is Outcome.CHANGED and first.state is not None
    assert (first.state.suspended, first.state.reasons, first.state.version, first.state.suspended_at) == (
        False, (), 1, None)
    for known in (suspended(), first.state):  # a replayed signup: suspended stays suspended
        again = apply_command(known, cmd(Action.REGISTER, Reason.SIGNUP, command_id="k2"), NOW)
        assert again.outcome is Outcome.NOOP and again.state is known


def test_each_change_has_its_event_type() -> None:
    from models import EventType
    from workers.state.transitions import ScheduleChange, event_type

    admitted = apply_command(None, cmd(Action.REGISTER, Reason.SIGNUP), NOW).state
    assert admitted is not None
    first = suspended((Reason.SIGNUP,))
    second = suspended((Reason.SIGNUP, Reason.PLAN), version=2)
    lifted = CustomerState("c1", "s1", False, (), T0, NOW, 3, NOW, "k3")
    nothing = ScheduleChange([], [], None, None)
    register, suspend, lift = cmd(Action.REGISTER, Reason.SIGNUP), cmd(), cmd(Action.LIFT)
    assert event_type(register, None, admitted, nothing) is EventType.ADMITTED
    assert event_type(suspend, None, first, nothing) is EventType.SUSPENDED
    assert event_type(suspend, admitted, first, nothing) is EventType.SUSPENDED
    assert event_type(suspend, first, second, nothing) is EventType.REASON_ADDED
    assert event_type(lift, second, lifted, nothing) is EventType.LIFTED
    assert event_type(suspend, lifted, suspended(version=4), nothing) is EventType.SUSPENDED


def test_hot_path_event_encoding_equals_the_contract_model() -> None:
    from aiokafka.structs import ConsumerRecord

    from models import Cause, LifecycleEvent, decode, encode
    from workers.state.handler import lifecycle_record
    from workers.state.transitions import AppliedCommand, schedule_change

    command = SuspensionCommand(command_id="k9", issued_at=T0, space_id="s1", customer_id="c1", action=Action.LIFT,
                                reason=Reason.MANUAL, actor="admin:ops", note="paid", missed_invoices=MissedInvoices.WAIVE,
                                cause=Cause(topic="t", event_id="e"))
    before = suspended((Reason.SIGNUP, Reason.PLAN), version=2)
    transition = apply_command(before, command, NOW)
    record = ConsumerRecord("suspension.commands", 1, 5, 0, 0, b"c1", b"{}", None, 2, 2, ())
    applied = AppliedCommand(command, 0, transition, before)
    out = lifecycle_record(applied, schedule_change(applied, NOW), record, "2026-11-25T11:00:00.123456Z",
                           ['{"job_id": "j1"}', '{"job_id": "j2"}'])
    event = decode(LifecycleEvent, out.value)
    assert encode(event) == out.value
    assert (event.type, event.version, event.reasons_before, event.reasons_after) == (
        "lifted", 3, [Reason.SIGNUP, Reason.PLAN], [])
    assert (event.source, event.invoices_waived, event.invoices_billed) == ("operator_cli", ["j1", "j2"], None)
    assert out.record_id == event.event_id and dict(out.extra_headers)["ce_type"] == b"suspensions.lifted"


def schedule_cmd(action: Action, command_id: str, *, at: datetime | None = None, until: datetime | None = None,
                 schedule_id: str | None = None, issued: datetime = T0,
                 missed: MissedInvoices | None = None) -> SuspensionCommand:
    return SuspensionCommand(command_id=command_id, issued_at=issued, space_id="s1", customer_id="c1",
                             action=action, reason=Reason.MANUAL, actor="admin:ops", at=at, until=until,
                             schedule_id=schedule_id, missed_invoices=missed)


def test_a_scheduled_suspension_changes_only_the_pending_list_and_fires_as_a_manual_one() -> None:
    due = T0 + timedelta(days=3)
    scheduled = apply_command(None, schedule_cmd(Action.SUSPEND, "k1", at=due), NOW).state
    assert scheduled is not None and not scheduled.suspended and scheduled.version == 1
    assert [(e.schedule_id, e.action, e.at) for e in scheduled.scheduled] == [("k1", Action.SUSPEND, due)]
    early = apply_command(scheduled, schedule_cmd(Action.SUSPEND, "f0", schedule_id="k1", issued=due - timedelta(1)),
                          NOW)
    assert early.outcome is Outcome.NOOP  # a stale fire (the schedule was moved later) does nothing
    fired = apply_command(scheduled, schedule_cmd(Action.SUSPEND, "f1", schedule_id="k1", issued=due), NOW)
    assert fired.outcome is Outcome.CHANGED and fired.state is not None
    assert (fired.state.suspended, fired.state.reasons, fired.state.scheduled) == (True, (Reason.MANUAL,), ())
    again = apply_command(fired.state, schedule_cmd(Action.SUSPEND, "f2", schedule_id="k1", issued=due), NOW)
    assert again.outcome is Outcome.NOOP  # fired once


def test_scheduling_again_moves_and_cancel_removes() -> None:
    first = apply_command(suspended(), schedule_cmd(Action.LIFT, "k1", at=T0 + timedelta(days=1),
                                                    missed=MissedInvoices.WAIVE), NOW).state
    assert first is not None
    moved = apply_command(first, schedule_cmd(Action.LIFT, "k2", at=T0 + timedelta(days=5)), NOW).state
    assert moved is not None and moved.version == first.version + 1
    assert [(e.schedule_id, e.at) for e in moved.scheduled] == [("k1", T0 + timedelta(days=5))]  # same id, moved
    cancelled = apply_command(moved, schedule_cmd(Action.CANCEL_SCHEDULE, "k3", schedule_id="k1"), NOW)
    assert cancelled.outcome is Outcome.CHANGED and cancelled.state is not None and cancelled.state.scheduled == ()
    assert cancelled.state.suspended  # cancelling a lift leaves the suspension as it was
    unknown = apply_command(cancelled.state, schedule_cmd(Action.CANCEL_SCHEDULE, "k4", schedule_id="k1"), NOW)
    assert unknown.outcome is Outcome.NOOP


def test_suspend_until_is_one_action_and_a_manual_lift_keeps_a_later_suspension() -> None:
    until = apply_command(None, schedule_cmd(Action.SUSPEND, "k1", until=T0 + timedelta(days=2)), NOW).state
    assert until is not None and until.suspended and until.version == 1
    assert [(e.schedule_id, e.action) for e in until.scheduled] == [("k1:until", Action.LIFT)]
    both = apply_command(None, schedule_cmd(Action.SUSPEND, "k2", at=T0 + timedelta(days=1),
                                            until=T0 + timedelta(days=2)), NOW).state
    assert both is not None and not both.suspended
    assert [e.action for e in both.scheduled] == [Action.SUSPEND, Action.LIFT]
    later = apply_command(suspended(), schedule_cmd(Action.SUSPEND, "k3", at=T0 + timedelta(days=9)), NOW).state
    assert later is not None
    lifted = apply_command(later, schedule_cmd(Action.LIFT, "k4"), NOW).state
    assert lifted is not None and not lifted.suspended
    assert [e.schedule_id for e in lifted.scheduled] == ["k3"]  # still pending after an immediate lift


def test_a_fired_lift_on_an_active_customer_still_ends_the_schedule() -> None:
    active = CustomerState("c1", "s1", False, (), T0, T0, 2, T0, "k0")
    pending = apply_command(active, schedule_cmd(Action.LIFT, "k1", at=T0 + timedelta(hours=1)), NOW).state
    assert pending is not None
    fired = apply_command(pending, schedule_cmd(Action.LIFT, "f1", schedule_id="k1", issued=T0 + timedelta(hours=1)),
                          NOW)
    assert fired.outcome is Outcome.CHANGED and fired.state is not None
    assert (fired.state.suspended, fired.state.scheduled, fired.state.version) == (False, (), 4)
    assert fired.settle_missed_invoices is None  # nothing was lifted, nothing to settle


def test_a_fire_id_is_a_contract_id_whatever_the_schedule_id() -> None:
    from models import ID_MAX_LENGTH
    from workers.state.scheduler import fire_id

    moment = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
    assert fire_id("cmd-1", moment) == "fire:cmd-1:1796112000000"  # as before, where it fits
    long_until = "c" * ID_MAX_LENGTH + ":until"
    fired = fire_id(long_until, moment)
    assert len(fired) <= ID_MAX_LENGTH and fired == fire_id(long_until, moment)  # the same id every time
    assert fired != fire_id("c" * ID_MAX_LENGTH, moment)


def test_a_release_removes_one_reason_and_keeps_the_customer_suspended_while_another_remains() -> None:
    transition = apply_command(suspended((Reason.SIGNUP, Reason.OVERDUE)), cmd(Action.RELEASE, Reason.OVERDUE), NOW)
    assert transition.outcome is Outcome.CHANGED and transition.state is not None
    assert (transition.state.suspended, transition.state.reasons, transition.state.suspended_at) == (
        True, (Reason.SIGNUP,), T0)
    assert transition.settle_missed_invoices is None  # still suspended: nothing billed or waived yet


def test_a_release_of_the_last_reason_lifts_and_settles_the_missed_invoices_as_it_says() -> None:
    transition = apply_command(suspended((Reason.OVERDUE,)),
                               cmd(Action.RELEASE, Reason.OVERDUE, missed=MissedInvoices.WAIVE, at=NOW), NOW)
    assert transition.outcome is Outcome.CHANGED and transition.state is not None
    assert (transition.state.suspended, transition.state.reasons, transition.state.lifted_at) == (False, (), NOW)
    assert transition.settle_missed_invoices is MissedInvoices.WAIVE


def test_a_release_of_a_reason_not_held_changes_nothing() -> None:
    for current in (None, suspended((Reason.SIGNUP,)), CustomerState("c1", "s1", False, (), None, T0, 2, T0, "k0")):
        assert apply_command(current, cmd(Action.RELEASE, Reason.OVERDUE), NOW).outcome is Outcome.NOOP
