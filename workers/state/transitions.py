"""Pure rules: given a customer's state and a command, which new state?

No I/O here; the worker feeds stored state in and writes the plan out.
The value classes are never changed after construction, but are not declared
frozen: a frozen dataclass costs six times as much to build, once or more per
command on the hot path (bench/RESULTS.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from models import Action, CustomerState, MissedInvoices, SuspensionCommand


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
    if command.action is Action.SUSPEND:
        return _suspend(current, command, now)
    if command.action is Action.REGISTER:
        return _register(current, command, now)
    return _lift(current, command, now)


def _register(current: CustomerState | None, command: SuspensionCommand, now: datetime) -> Transition:
    """The decision for a signup that suspends nothing: a first state, not suspended. A customer known
    already keeps its state: a replayed signup never writes a suspended customer back to active."""
    if current is not None:
        return Transition(Outcome.NOOP, current)
    return Transition(
        Outcome.CHANGED,
        CustomerState(
            customer_id=command.customer_id,
            space_id=command.space_id,
            suspended=False,
            reasons=(),
            suspended_at=None,
            lifted_at=None,
            version=1,
            updated_at=now,
            last_command_id=command.command_id,
        ),
    )


def _suspend(current: CustomerState | None, command: SuspensionCommand, now: datetime) -> Transition:
    if current is not None and current.suspended:
        if command.reason in current.reasons:
            return Transition(Outcome.NOOP, current)
        return Transition(
            Outcome.CHANGED,
            CustomerState(
                customer_id=current.customer_id,
                space_id=current.space_id,
                suspended=True,
                reasons=(*current.reasons, command.reason),
                suspended_at=current.suspended_at,
                lifted_at=current.lifted_at,
                version=current.version + 1,
                updated_at=now,
                last_command_id=command.command_id,
            ),
        )
    return Transition(
        Outcome.CHANGED,
        CustomerState(
            customer_id=command.customer_id,
            space_id=command.space_id,
            suspended=True,
            reasons=(command.reason,),
            suspended_at=command.issued_at,
            lifted_at=current.lifted_at if current else None,
            version=(current.version if current else 0) + 1,
            updated_at=now,
            last_command_id=command.command_id,
        ),
    )


def _lift(current: CustomerState | None, command: SuspensionCommand, now: datetime) -> Transition:
    if current is None or not current.suspended:
        return Transition(Outcome.NOOP, current)
    return Transition(
        Outcome.CHANGED,
        CustomerState(
            customer_id=current.customer_id,
            space_id=current.space_id,
            suspended=False,
            reasons=(),
            suspended_at=current.suspended_at,
            lifted_at=command.issued_at,
            version=current.version + 1,
            updated_at=now,
            last_command_id=command.command_id,
        ),
        settle_missed_invoices=command.missed_invoices_or_default,
    )


@dataclass(slots=True)
class Applied:
    """One command of a batch with what it did."""

    command: SuspensionCommand
    position: int  # index of the record in the batch
    transition: Transition
    previous: CustomerState | None = None  # the state before the command


@dataclass
class BatchPlan:
    applied: list[Applied] = field(default_factory=list)
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
        plan.applied.append(Applied(command, position, transition, previous))
    return plan
