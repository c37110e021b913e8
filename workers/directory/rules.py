"""What the directory keeps of a batch: pure, from records to rows (tested without any service).

- A signup carrying a ``display_name`` or an ``email`` is the customer's profile at its ``occurred_at``; a
  ``customer.profile`` record is the whole profile at its ``updated_at``. The latest moment wins (the
  store compares it with the stored one, so a replay or a late record never overwrites a newer one).
- A signup that breaks the contract is skipped: the triggers worker, its first reader, dead-letters it. A
  ``customer.profile`` record is read only here, so a bad one becomes a dead letter here.
- A dead letter is counted for the space its original record names (``space_id`` in its JSON), if any.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import orjson
from aiokafka.structs import ConsumerRecord

from models import CustomerProfile, CustomerSignup, DeadLetter, DecodeError, decode
from models.base import ID_MAX_LENGTH, holds_control_character
from topics import CUSTOMER_PROFILE, CUSTOMER_SIGNUPS, DEADLETTER
from workers.runtime.deadletters import check_customer_key, dead_letter
from workers.runtime.metrics import Metrics
from workers.runtime.publishing import OutgoingRecord

DEAD_LETTER_ERROR_CHARS = 2000


@dataclass(frozen=True)
class ProfileRow:
    space_id: str
    customer_id: str
    display_name: str | None
    email: str | None
    updated_at: datetime
    source: str  # topic:partition:offset of the record


@dataclass(frozen=True)
class DeadLetterRow:
    record_id: str  # topic:partition:offset of the rejected record, as the letter's own header
    space_id: str | None
    source_topic: str
    worker: str
    error: str
    failed_at: datetime


@dataclass
class Planned:
    profiles: list[ProfileRow]
    dead_letters: list[DeadLetterRow]
    to_publish: list[OutgoingRecord]  # dead letters of bad `customer.profile` records


def _known(text: str | None) -> str | None:
    return text if text and text.strip() else None


def profile_of(record: ConsumerRecord) -> ProfileRow | None:
    """The profile a signup or profile record carries; None for a signup that names nobody. Raises
    DecodeError for a record that breaks the contract."""
    source = f"{record.topic}:{record.partition}:{record.offset}"
    if record.topic == CUSTOMER_SIGNUPS.name:
        signup = decode(CustomerSignup, record.value)
        check_customer_key(record.key, signup.customer_id)
        if _known(signup.display_name) is None and _known(signup.email) is None:
            return None
        return ProfileRow(signup.space_id, signup.customer_id, _known(signup.display_name), _known(signup.email),
                          signup.occurred_at, source)
    profile = decode(CustomerProfile, record.value)
    check_customer_key(record.key, profile.customer_id)
    return ProfileRow(profile.space_id, profile.customer_id, _known(profile.display_name), _known(profile.email),
                      profile.updated_at, source)


def space_named_by(value: str | None) -> str | None:
    """The ``space_id`` a rejected record's JSON names, when it names a storable one."""
    if not value:
        return None
    try:
        parsed = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    space = parsed.get("space_id") if isinstance(parsed, dict) else None
    if not isinstance(space, str) or not 0 < len(space) <= ID_MAX_LENGTH or holds_control_character(space):
        return None
    return space


# A letter is shown to the space its record names; a refusal for naming another space than the customer's
# must not tell that space which space the customer is in.
_OTHER_SPACE = re.compile(r"belongs to space '[^']*'")


def letter_row(letter: DeadLetter) -> DeadLetterRow:
    error = _OTHER_SPACE.sub("belongs to another space", letter.error.replace("\x00", "\ufffd"))
    error = error[:DEAD_LETTER_ERROR_CHARS]
    return DeadLetterRow(f"{letter.source_topic}:{letter.partition}:{letter.offset}".replace("\x00", "\ufffd"),
                         space_named_by(letter.value), letter.source_topic.replace("\x00", "\ufffd"),
                         letter.worker.replace("\x00", "\ufffd"), error, letter.failed_at)


def latest_per_customer(rows: Sequence[ProfileRow]) -> list[ProfileRow]:
    """One row per (space, customer), the latest; at an equal moment the later record (an upstream that sends
    two in one instant means the second). One statement cannot update a row twice."""
    latest: dict[tuple[str, str], ProfileRow] = {}
    for row in rows:
        key = (row.space_id, row.customer_id)
        if key not in latest or row.updated_at >= latest[key].updated_at:
            latest[key] = row
    return list(latest.values())


def plan(records: Sequence[ConsumerRecord], worker: str, metrics: Metrics) -> Planned:
    profiles: list[ProfileRow] = []
    letters: dict[str, DeadLetterRow] = {}
    to_publish: list[OutgoingRecord] = []
    for record in records:
        if record.topic == DEADLETTER.name:
            try:
                row = letter_row(decode(DeadLetter, record.value))
            except DecodeError:
                continue  # not a letter of ours: nothing to count
            letters[row.record_id] = row
            continue
        try:
            found = profile_of(record)
        except DecodeError as error:
            if record.topic == CUSTOMER_PROFILE.name:
                to_publish.append(dead_letter(record, str(error), worker, metrics))
            continue
        if found is not None:
            profiles.append(found)
    return Planned(latest_per_customer(profiles), list(letters.values()), to_publish)
