"""The one JSON codec of the contract.

Records are decoded with pydantic's JSON parser in strict mode: a wrong type is
an error, never coerced (``"true"`` is not a bool, ``1`` is not a string).
Unknown fields are ignored for forward compatibility. Timestamps must carry a
zone.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from datetime import UTC, datetime
from typing import Annotated, TypeVar

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, StringConstraints, ValidationError

T = TypeVar("T", bound="ContractModel")

# Ids are non-empty strings; a bound keeps a hostile record from filling the database.
ID_MAX_LENGTH = 200
TEXT_MAX_LENGTH = 2000
# Text fields refuse the C0 control characters (U+0000, which PostgreSQL cannot store, among them);
# free text (notes) keeps tab, line feed and carriage return. Lone surrogates never get this far: the
# JSON parser refuses them, and so does the validation of a Python string. The patterns are checked
# by pydantic's core (no Python call per field); ``describe_invalid`` words their failures.
SINGLE_LINE_PATTERN = r"^[^\x00-\x1f]*$"
MULTI_LINE_PATTERN = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f]*$"
ACTOR_PATTERN = r"^(system|rule:[a-z_]{1,50}|admin:[^\s\x00-\x1f]{1,100})$"
_PATTERN_REASONS = {
    ACTOR_PATTERN: "must be system, rule:<name> or admin:<id>, the id 1 to 100 characters without white space "
                   "or control characters",
    SINGLE_LINE_PATTERN: "must not contain control characters (U+0000 to U+001F)",
    MULTI_LINE_PATTERN: "must not contain control characters other than tab, line feed and carriage return",
}


_SINGLE_LINE = re.compile(SINGLE_LINE_PATTERN)
_MULTI_LINE = re.compile(MULTI_LINE_PATTERN)


def holds_control_character(text: str, *, multi_line: bool = False) -> bool:
    """The contract's rule for text checked outside a model (URLs, bulk files): True when ``text`` holds a
    control character (with ``multi_line``, other than tab, line feed and carriage return). A full match:
    a regular expression's ``$`` also matches before a final line feed, which is a control character too."""
    return (_MULTI_LINE if multi_line else _SINGLE_LINE).fullmatch(text) is None


def _representable_in_utc(moment: datetime) -> datetime:
    """A moment whose UTC falls outside years 1-9999 (``9999-12-31T23:00:00-05:00``) cannot be compared
    or written as UTC: refused here rather than failing deep in a worker."""
    try:
        moment.astimezone(UTC)
    except OverflowError:
        raise ValueError("must fall within the years 1 to 9999 in UTC") from None
    return moment


Id = Annotated[str, StringConstraints(min_length=1, max_length=ID_MAX_LENGTH, pattern=SINGLE_LINE_PATTERN)]
Text = Annotated[str, StringConstraints(max_length=TEXT_MAX_LENGTH, pattern=MULTI_LINE_PATTERN)]
Line = Annotated[str, StringConstraints(max_length=TEXT_MAX_LENGTH, pattern=SINGLE_LINE_PATTERN)]
Timestamp = Annotated[AwareDatetime, AfterValidator(_representable_in_utc)]


def utc_iso(moment: datetime | None = None) -> str:
    """The contract's timestamp text: ISO 8601 in UTC with a ``Z`` (now, when no moment is given)."""
    return (moment or datetime.now(UTC)).astimezone(UTC).isoformat().replace("+00:00", "Z")


def name_based_id(namespace: uuid.UUID, name: str) -> str:
    """``str(uuid.uuid5(namespace, name))``, the same text (RFC 4122 name-based, SHA-1), without the
    ``UUID`` object: the workers derive one or two of these per record."""
    digest = bytearray(hashlib.sha1(namespace.bytes + name.encode()).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # the RFC 4122 variant
    text = digest.hex()
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


class ContractModel(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)


# Larger records are bad input: no contract record comes near this size.
MAX_RECORD_BYTES = 1024 * 1024


class DecodeError(ValueError):
    """A record that is not a valid instance of its contract model."""


def describe_invalid(error: ValidationError) -> str:
    """Every problem of a validation error, field by field: ``field: message; field: message``."""
    parts = []
    for item in error.errors(include_url=False):
        location = ".".join(str(part) for part in item["loc"]) or "(record)"
        reason = _PATTERN_REASONS.get(str(item.get("ctx", {}).get("pattern")), item["msg"])
        parts.append(f"{location}: {reason.removeprefix('Value error, ')}")
    return "; ".join(parts)


def decode(model: type[T], raw: bytes | None) -> T:
    """Decode one record value, raising DecodeError with a human-readable reason."""
    if raw is None:
        raise DecodeError("record has no value (tombstone or null)")
    if len(raw) > MAX_RECORD_BYTES:
        raise DecodeError(f"record of {len(raw)} bytes exceeds the limit of {MAX_RECORD_BYTES} bytes")
    try:
        return model.model_validate_json(raw)
    except ValidationError as error:
        raise DecodeError(f"invalid {model.__name__}: {describe_invalid(error)}") from None


def encode(record: ContractModel) -> bytes:
    return record.model_dump_json().encode()
