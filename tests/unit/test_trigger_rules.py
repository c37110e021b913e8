"""The automatic suspension rules, without any service."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from models import (
    Action,
    CrmOpportunityEvent,
    CrmStageSetting,
    CustomerSignup,
    DecodeError,
    PlanChange,
    PlanSetting,
    Reason,
    SignupSetting,
)
from workers.triggers.rules import (
    SettingsSnapshot,
    commands_for_opportunity,
    commands_for_plan_change,
    commands_for_signup,
)
from workers.triggers.settings_table import apply_setting_record

AT = datetime(2026, 11, 25, 10, tzinfo=UTC)


def snapshot() -> SettingsSnapshot:
    return SettingsSnapshot(
        signup={"s1": SignupSetting(space_id="s1", keep_new_members_suspended=True, updated_at=AT),
                "s2": SignupSetting(space_id="s2", keep_new_members_suspended=False, updated_at=AT)},
        plans={"probation": PlanSetting(space_id="s2", plan_id="probation", suspend_on_join=True, updated_at=AT),
               "standard": PlanSetting(space_id="s2", plan_id="standard", suspend_on_join=False, updated_at=AT)},
        crm_stages={"b/bad": CrmStageSetting(space_id="s2", board_id="b", stage_id="bad", deactivate_account=True,
                                             updated_at=AT)},
    )


def signup(space: str, plan: str | None = None, event_id: str = "e1") -> CustomerSignup:
    return CustomerSignup(event_id=event_id, occurred_at=AT, space_id=space, customer_id="c1", plan_id=plan)


def test_signup_rule_per_space() -> None:
    [command] = commands_for_signup(signup("s1"), snapshot())
    assert (command.reason, command.actor, command.action.value) == (Reason.SIGNUP, "system", "suspend")
    assert command.cause is not None and command.cause.topic == "customer.signups"
    assert command.issued_at == AT
    # A signup that suspends nothing still gets a decision: register (the first state, not suspended).
    for space in ("s2", "unknown-space"):
        [decision] = commands_for_signup(signup(space), snapshot())
        assert (decision.action, decision.reason, decision.actor) == (Action.REGISTER, Reason.SIGNUP, "system")
        assert decision.cause is not None and decision.cause.event_id == "e1"
        assert decision.command_id != command.command_id
        assert decision.command_id == commands_for_signup(signup(space), snapshot())[0].command_id  # replay-safe


def test_signup_with_a_flagged_plan_fires_both_rules_with_distinct_ids() -> None:
    settings = snapshot()
    settings.signup["s2"] = SignupSetting(space_id="s2", keep_new_members_suspended=True, updated_at=AT)
    commands = commands_for_signup(signup("s2", plan="probation"), settings)
    assert [c.reason for c in commands] == [Reason.SIGNUP, Reason.PLAN]
    assert commands[0].command_id != commands[1].command_id


def test_command_ids_derive_from_the_event() -> None:
    first = commands_for_signup(signup("s1"), snapshot())[0].command_id
    assert commands_for_signup(signup("s1"), snapshot())[0].command_id == first
    assert commands_for_signup(signup("s1", event_id="e2"), snapshot())[0].command_id != first


def test_plan_rule_respects_the_plan_flag_and_its_space() -> None:
    change = PlanChange(event_id="e", occurred_at=AT, space_id="s2", customer_id="c", plan_id="probation")
    [command] = commands_for_plan_change(change, snapshot())
    assert command.reason is Reason.PLAN and command.cause is not None
    assert command.cause.topic == "customer.plan-changes"
    assert commands_for_plan_change(change.model_copy(update={"plan_id": "standard"}), snapshot()) == []
    assert commands_for_plan_change(change.model_copy(update={"space_id": "s1"}), snapshot()) == []


def test_crm_rule() -> None:
    event = CrmOpportunityEvent(event_id="e", occurred_at=AT, space_id="s2", customer_id="c", opportunity_id="o",
                                board_id="b", stage_id="bad")
    assert [c.reason for c in commands_for_opportunity(event, snapshot())] == [Reason.CRM_STAGE]
    assert commands_for_opportunity(event.model_copy(update={"stage_id": "won"}), snapshot()) == []
    assert commands_for_opportunity(event.model_copy(update={"space_id": "s1"}), snapshot()) == []


def test_settings_records_fold_and_turn_off() -> None:
    settings = SettingsSnapshot()
    apply_setting_record(settings, "settings.signup", b"s9",
                         b'{"space_id":"s9","keep_new_members_suspended":true,"updated_at":"2026-11-25T10:00:00Z"}')
    assert settings.keeps_new_members_suspended("s9")
    apply_setting_record(settings, "settings.signup", b"s9",
                         b'{"space_id":"s9","keep_new_members_suspended":false,"updated_at":"2026-11-25T11:00:00Z"}')
    assert not settings.keeps_new_members_suspended("s9")
    apply_setting_record(settings, "settings.crm-stages", b"b/s",
                         b'{"space_id":"s9","board_id":"b","stage_id":"s","deactivate_account":true,'
                         b'"updated_at":"2026-11-25T10:00:00Z"}')
    assert settings.stage_deactivates("s9", "b", "s")
    apply_setting_record(settings, "settings.crm-stages", b"b/s", None)  # tombstone
    assert not settings.stage_deactivates("s9", "b", "s")


@pytest.mark.parametrize(
    ("topic", "key", "value", "message"),
    [
        ("settings.plans", b"other", b'{"space_id":"s","plan_id":"p","suspend_on_join":true,'
                                     b'"updated_at":"2026-11-25T10:00:00Z"}', "does not match its plan_id"),
        ("settings.signup", b"s", b'{"space_id":"s","keep_new_members_suspended":"yes",'
                                  b'"updated_at":"2026-11-25T10:00:00Z"}', "valid boolean"),
        ("settings.signup", None, b"{}", "has no key"),
    ],
)
def test_bad_settings_records_are_errors(topic: str, key: bytes | None, value: bytes, message: str) -> None:
    with pytest.raises(DecodeError, match=message):
        apply_setting_record(SettingsSnapshot(), topic, key, value)
