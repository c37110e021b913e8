"""When a scheduled action happens: reading an operator's WHEN in the space's own time zone.

The bugs operators report about scheduling are time-zone bugs: a date parsed as UTC midnight is the
wrong day west of Greenwich, and a daylight-saving change moves a local time by an hour. Here:

- ``WHEN`` with an offset (``2026-12-01T09:00:00+01:00``, ``...Z``) is that instant.
- A local date-time without an offset is read in the space's zone; a date alone means 00:00 local.
- A local time that does not exist (the clock jumps forward over it) means the instant the clock
  would have shown it had it not jumped: it is moved forward by the gap (02:30 on the spring-forward
  night in Europe/London is 03:30 BST, that is 02:30 UTC).
- A local time that happens twice (the clock falls back) means the first of the two (the earlier
  instant, still on summer time).

Stored and published in UTC; shown in both UTC and the space's local time.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


class MomentError(ValueError):
    """A WHEN that cannot be read, or names no zone known."""


def zone(name: str) -> ZoneInfo:
    """An IANA zone; MomentError for an unknown name (and for paths, which ZoneInfo would open)."""
    if not name or name.startswith(("/", ".")) or ".." in name:
        raise MomentError(f"unknown time zone {name!r}")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise MomentError(f"unknown time zone {name!r} (an IANA name such as Europe/London)") from None


def resolve_local(local: datetime, tz: ZoneInfo) -> datetime:
    """A naive local date-time in ``tz`` as a UTC instant, by the rules above: ``fold=0`` takes the
    offset in force before a transition, which is the first occurrence of a repeated time and, for a
    time in a gap, the wall time moved forward by the gap (PEP 495)."""
    return local.replace(tzinfo=tz, fold=0).astimezone(UTC)


def parse_when(text: str, tz: ZoneInfo) -> datetime:
    """An operator's WHEN as a UTC instant: ISO 8601 with an offset, or a local date or date-time."""
    value = text.strip()
    try:
        if len(value) == 10:
            return resolve_local(datetime.combine(date.fromisoformat(value), time()), tz)
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00") if value.endswith("Z") else value)
    except ValueError:
        raise MomentError(f"cannot read {text!r}: use ISO 8601, e.g. 2026-12-01, 2026-12-01T09:00 or "
                          "2026-12-01T09:00:00+01:00") from None
    if parsed.tzinfo is None:
        return resolve_local(parsed, tz)
    return parsed.astimezone(UTC)


def in_future(moment: datetime, now: datetime, text: str) -> datetime:
    """The moment, or MomentError when it is not ahead of ``now`` (a schedule in the past is refused)."""
    if moment <= now:
        raise MomentError(f"{text!r} is {moment.isoformat()} UTC, not in the future (now {now.isoformat()} UTC)")
    return moment


def shown(moment: datetime | None, tz: ZoneInfo | None = None) -> str:
    """A moment as people read it, the one form of the CLI, the console and the API's texts: UTC to the
    millisecond, labelled, and with a space's zone (other than UTC) its local time, offset and zone beside
    it. Empty for no moment. (Records keep the contract's form, ``models.base.utc_iso``.)"""
    if moment is None:
        return ""
    utc = moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + " UTC"
    if tz is None or tz.key == "UTC":
        return utc
    return f"{utc} ({moment.astimezone(tz):%Y-%m-%d %H:%M:%S %z} {tz.key})"

