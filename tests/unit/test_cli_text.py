"""How the CLI shows values to people (its --json output keeps the contract's own forms)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from models.moments import shown as moment


def test_a_moment_is_utc_to_the_millisecond_and_labelled() -> None:
    madrid_winter = timezone(timedelta(hours=1))
    assert moment(datetime(2026, 11, 29, 2, 13, 2, 821376, tzinfo=madrid_winter)) == "2026-11-29 01:13:02.821 UTC"
    assert moment(datetime(2026, 11, 29, 1, 0, tzinfo=UTC)) == "2026-11-29 01:00:00.000 UTC"
    assert moment(None) == ""
