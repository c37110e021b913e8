"""Reading an operator's WHEN in the space's own zone, across real zones and their DST changes."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from models.moments import MomentError, in_future, parse_when, shown, zone


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize(("tz", "when", "instant"), [
    # A date alone is 00:00 local that day: west of Greenwich it is not the UTC day before.
    ("America/Los_Angeles", "2026-12-01", "2026-12-01T08:00"),
    ("America/Los_Angeles", "2026-07-01", "2026-07-01T07:00"),
    ("Europe/London", "2026-12-01", "2026-12-01T00:00"),
    ("Europe/London", "2026-07-01", "2026-06-30T23:00"),
    ("Australia/Lord_Howe", "2026-12-01", "2026-11-30T13:00"),  # +11 in summer
    ("Australia/Lord_Howe", "2026-07-01", "2026-06-30T13:30"),  # +10:30 in winter
    # A local date-time without an offset is read in the zone.
    ("Europe/London", "2026-12-01T09:30", "2026-12-01T09:30"),
    ("America/Los_Angeles", "2026-12-01T09:30", "2026-12-01T17:30"),
    # With an offset (or Z), the zone does not matter.
    ("America/Los_Angeles", "2026-12-01T09:30:00+01:00", "2026-12-01T08:30"),
    ("Australia/Lord_Howe", "2026-12-01T09:30:00Z", "2026-12-01T09:30"),
])
def test_when_in_the_spaces_zone(tz: str, when: str, instant: str) -> None:
    assert parse_when(when, zone(tz)) == utc(instant)


@pytest.mark.parametrize(("tz", "when", "instant", "local"), [
    # The clock jumps forward over it: the wall time moved forward by the gap.
    ("Europe/London", "2027-03-28T01:30", "2027-03-28T01:30", "02:30 +0100"),
    ("America/Los_Angeles", "2027-03-14T02:30", "2027-03-14T10:30", "03:30 -0700"),
    ("Australia/Lord_Howe", "2026-10-04T02:15", "2026-10-03T15:45", "02:45 +1100"),  # a 30-minute gap
])
def test_a_local_time_that_does_not_exist_moves_forward_by_the_gap(tz: str, when: str, instant: str,
                                                                   local: str) -> None:
    moment = parse_when(when, zone(tz))
    assert moment == utc(instant)
    assert local.replace(" ", ":00 ", 1) in shown(moment, zone(tz))


@pytest.mark.parametrize(("tz", "when", "instant"), [
    # The clock falls back and shows it twice: the first of the two (still on summer time).
    ("Europe/London", "2026-10-25T01:30", "2026-10-25T00:30"),
    ("America/Los_Angeles", "2026-11-01T01:30", "2026-11-01T08:30"),
    ("Australia/Lord_Howe", "2027-04-04T01:45", "2027-04-03T14:45"),
])
def test_a_local_time_that_happens_twice_is_the_first(tz: str, when: str, instant: str) -> None:
    assert parse_when(when, zone(tz)) == utc(instant)


def test_unknown_zones_and_unreadable_moments_are_refused() -> None:
    for name in ("Mars/Olympus_Mons", "", "../etc/passwd", "/etc/localtime"):
        with pytest.raises(MomentError, match="unknown time zone"):
            zone(name)
    with pytest.raises(MomentError, match="cannot read"):
        parse_when("next tuesday", zone("UTC"))


def test_a_moment_in_the_past_is_refused() -> None:
    now = utc("2026-11-28T12:00")
    with pytest.raises(MomentError, match="not in the future"):
        in_future(parse_when("2026-11-28", zone("Europe/London")), now, "2026-11-28")
    assert in_future(utc("2026-11-28T12:00:01"), now, "x") == utc("2026-11-28T12:00:01")


def test_a_moment_is_shown_in_utc_and_the_space_s_local_time() -> None:
    moment = utc("2026-12-01T08:00")
    assert shown(moment, zone("America/Los_Angeles")) == (
        "2026-12-01 08:00:00.000 UTC (2026-12-01 00:00:00 -0800 America/Los_Angeles)")
    assert shown(moment, zone("UTC")) == shown(moment) == "2026-12-01 08:00:00.000 UTC"
    assert shown(None) == ""
