"""Pure rules: given a customer's state and a command, which new state?

No I/O here; the worker feeds stored state in and writes the plan out.
The value classes are never changed after construction, but are not declared
frozen: a frozen dataclass costs six times as much to build, once or more per
command on the hot path (bench/RESULTS.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import datetime
from enum import StrEnum
from typing import Any

from models import Action, CustomerState, EventType, MissedInvoices, ScheduledEntry, SuspensionCommand


class Outcome(StrEnum):
    CHANGED = "changed"  # a new version of the state
    NOOP = "noop"  # applied and recorded in history, state unchanged
    REJECTED = "rejected"  # breaks a rule: dead letter, no state change
    DUPLICATE = "duplicate"  # command id seen before: no further effect


@dataclass(slots=True)
class Transition:
    outcome: Outcome
    state: CustomerState | None  # the state after the command (None: customer still unknown)
    error: str | None = None
    settle_missed_invoices: MissedInvoices | None = None  # set on a lift that ended a suspension


def apply_command(current: CustomerState | None, command: SuspensionCommand, now: datetime) -> Transition:
    if current is not None and current.space_id != command.space_id:
        return Transition(
            Outcome.REJECTED,
            current,
            error=(
                f"command {command.command_id} names space '{command.space_id}' but customer "
                f"'{command.customer_id}' belongs to space '{current.space_id}'"
            ),
        )
    if command.action is Action.CANCEL_SCHEDULE:
        return _cancel(current, command, now)
    if command.schedule_id is not None:
        return _fire(current, command, now)
    if command.at is not None:  # a suspension or lift for later: only the schedule changes now
        return _scheduled(current, Transition(Outcome.NOOP, current), command, now)
    if command.action is Action.SUSPEND:
        transition = _suspend(current, command, now)
        return _scheduled(current, transition, command, now) if command.until is not None else transition
    if command.action is Action.REGISTER:
        return _register(current, command, now)
    if command.action is Action.RELEASE:
        return _release(current, command, now)
    return _lift(current, command, now)


def _next(current: CustomerState | None, command: SuspensionCommand, now: datetime, **changes: Any) -> CustomerState:
    """The next version of a customer's state (the first, for a customer not known yet)."""
    if current is None:
        base = CustomerState(command.customer_id, command.space_id, False, (), None, None, 0, now, command.command_id)
    else:
        base = current
    values = {name: getattr(base, name) for name in STATE_SLOTS}
    values.update(version=base.version + 1, updated_at=now, last_command_id=command.command_id, **changes)
    return CustomerState(**values)


STATE_SLOTS = tuple(field.name for field in fields(CustomerState))


def _register(current: CustomerState | None, command: SuspensionCommand, now: datetime) -> Transition:
    """The decision for a signup that suspends nothing: a first state, not suspended. A customer known
    already keeps its state: a replayed signup never writes a suspended customer back to active."""
    if current is not None:
        return Transition(Outcome.NOOP, current)
    return Transition(Outcome.CHANGED, _next(None, command, now))


def _suspend(current: CustomerState | None, command: SuspensionCommand, now: datetime) -> Transition:
    if current is not None and current.suspended:
        if command.reason in current.reasons:
            return Transition(Outcome.NOOP, current)
        return Transition(Outcome.CHANGED, _next(current, command, now, reasons=(*current.reasons, command.reason)))
    return Transition(Outcome.CHANGED, _next(current, command, now, suspended=True, reasons=(command.reason,),
                                             suspended_at=command.issued_at))


def _lift(current: CustomerState | None, command: SuspensionCommand, now: datetime) -> Transition:
    """A lift ends the suspension whatever its reasons; a later scheduled suspension stays pending."""
    if current is None or not current.suspended:
        return Transition(Outcome.NOOP, current)
    return Transition(
        Outcome.CHANGED,
        _next(current, command, now, suspended=False, reasons=(), lifted_at=command.issued_at),
        settle_missed_invoices=command.missed_invoices_or_default,
    )


def _release(current: CustomerState | None, command: SuspensionCommand, now: datetime) -> Transition:
    """One reason removed: still suspended while another remains, lifted (as a lift would) when none does."""
    if current is None or not current.suspended or command.reason not in current.reasons:
        return Transition(Outcome.NOOP, current)
    remaining = tuple(reason for reason in current.reasons if reason != command.reason)
    if remaining:
        return Transition(Outcome.CHANGED, _next(current, command, now, reasons=remaining))
    return _lift(current, command, now)


def _entry(command: SuspensionCommand, action: Action, at: datetime, schedule_id: str) -> ScheduledEntry:
    missed = command.missed_invoices_or_default if action is Action.LIFT and command.action is Action.LIFT else None
    return ScheduledEntry(schedule_id, action, at, missed, command.actor, command.note)


def _scheduled(current: CustomerState | None, transition: Transition, command: SuspensionCommand,
               now: datetime) -> Transition:
    """Add the command's schedules to the state ``transition`` left; scheduling again for the same action
    moves the pending schedule (it keeps its id)."""
    wanted = []
    if command.at is not None:
        wanted.append(_entry(command, command.action, command.at, command.command_id))
    if command.until is not None:
        wanted.append(_entry(command, Action.LIFT, command.until, f"{command.command_id}:until"))
    base = transition.state
    entries = list(base.scheduled) if base is not None else []
    for entry in wanted:
        pending = next((i for i, held in enumerate(entries) if held.action is entry.action), None)
        if pending is None:
            entries.append(entry)
        else:
            entry.schedule_id = entries[pending].schedule_id
            entries[pending] = entry
    scheduled = tuple(sorted(entries, key=lambda held: (held.at, held.schedule_id)))
    if transition.outcome is Outcome.CHANGED and base is not None:
        base.scheduled = scheduled  # the version this command made anyway
        return transition
    return Transition(Outcome.CHANGED, _next(current, command, now, scheduled=scheduled),
                      settle_missed_invoices=transition.settle_missed_invoices)


def _without(state: CustomerState, schedule_id: str) -> tuple[ScheduledEntry, ...]:
    return tuple(entry for entry in state.scheduled if entry.schedule_id != schedule_id)


def _cancel(current: CustomerState | None, command: SuspensionCommand, now: datetime) -> Transition:
    if current is None or all(entry.schedule_id != command.schedule_id for entry in current.scheduled):
        return Transition(Outcome.NOOP, current)  # unknown, fired or cancelled already
    assert command.schedule_id is not None
    return Transition(Outcome.CHANGED, _next(current, command, now, scheduled=_without(current, command.schedule_id)))


def _fire(current: CustomerState | None, command: SuspensionCommand, now: datetime) -> Transition:
    """A schedule's moment came: the suspend or lift as a manual one would apply now, and the schedule
    leaves the pending list. A schedule cancelled before its command arrived does nothing."""
    assert command.schedule_id is not None
    entry = next((held for held in current.scheduled if held.schedule_id == command.schedule_id), None) \
        if current is not None else None
    if current is None or entry is None or entry.at > command.issued_at:
        return Transition(Outcome.NOOP, current)  # cancelled, fired already, or moved later since
    remaining = _without(current, command.schedule_id)
    transition = _suspend(current, command, now) if command.action is Action.SUSPEND else _lift(current, command, now)
    if transition.outcome is Outcome.CHANGED and transition.state is not None:
        transition.state.scheduled = remaining
        return transition
    return Transition(Outcome.CHANGED, _next(current, command, now, scheduled=remaining))


@dataclass(slots=True)
class AppliedCommand:
    """One command of a batch with what it did."""

    command: SuspensionCommand
    position: int  # index of the record in the batch
    transition: Transition
    previous: CustomerState | None = None  # the state before the command


@dataclass
class BatchPlan:
    applied: list[AppliedCommand] = field(default_factory=list)
    final_states: dict[str, CustomerState] = field(default_factory=dict)


def plan_batch(
    stored: dict[str, CustomerState],
    already_processed: set[str],
    commands: list[tuple[int, SuspensionCommand]],
    now: datetime,
) -> BatchPlan:
    """Fold a batch of commands, in partition order, over the stored states."""
    plan = BatchPlan()
    states = dict(stored)
    seen = set(already_processed)
    for position, command in commands:
        previous = states.get(command.customer_id)
        if command.command_id in seen:
            transition = Transition(Outcome.DUPLICATE, previous)
        else:
            seen.add(command.command_id)
            transition = apply_command(previous, command, now)
            if transition.outcome is Outcome.CHANGED and transition.state is not None:
                states[command.customer_id] = transition.state
                plan.final_states[command.customer_id] = transition.state
        plan.applied.append(AppliedCommand(command, position, transition, previous))
    return plan


@dataclass(slots=True)
class ScheduleChange:
    """What one applied command did to the customer's schedules (from the state before and after)."""

    added: list[ScheduledEntry]  # new, or moved to another moment
    ended: list[ScheduledEntry]  # fired or cancelled
    fired: ScheduledEntry | None  # the schedule this command carried out
    fired_delay_ms: int | None



def schedule_change(applied: AppliedCommand, now: datetime) -> ScheduleChange:
    """Which schedules the command added, moved, fired or cancelled, from the states before and after."""
    before = applied.previous.scheduled if applied.previous is not None else ()
    state = applied.transition.state
    after = state.scheduled if state is not None and applied.transition.outcome is Outcome.CHANGED else before
    if not before and not after:  # nearly every command
        return ScheduleChange([], [], None, None)
    held = {entry.schedule_id: entry for entry in before}
    kept = {entry.schedule_id for entry in after}
    added = [entry for entry in after if held.get(entry.schedule_id) != entry]
    ended = [entry for entry in before if entry.schedule_id not in kept]
    command = applied.command
    fired = next((entry for entry in ended if entry.schedule_id == command.schedule_id
                  and command.action is not Action.CANCEL_SCHEDULE), None)
    delay = max(0, round((now - fired.at).total_seconds() * 1000)) if fired is not None else None
    return ScheduleChange(added, ended, fired, delay)


def event_type(command: SuspensionCommand, previous: CustomerState | None, state: CustomerState,
               change: ScheduleChange) -> EventType:
    """The lifecycle event type of one change."""
    was_suspended = previous is not None and previous.suspended
    if command.action is Action.REGISTER:
        return EventType.ADMITTED
    if state.suspended and not was_suspended:
        return EventType.SUSPENDED
    if state.suspended and previous is not None and state.reasons != previous.reasons:
        return EventType.REASON_REMOVED if len(state.reasons) < len(previous.reasons) else EventType.REASON_ADDED
    if was_suspended and not state.suspended:
        return EventType.LIFTED
    if change.added:
        return (EventType.SUSPENSION_SCHEDULED if any(entry.action is Action.SUSPEND for entry in change.added)
                else EventType.LIFT_SCHEDULED)
    if command.action is Action.CANCEL_SCHEDULE:
        return EventType.SCHEDULE_CANCELLED
    return EventType.SCHEDULE_FIRED
