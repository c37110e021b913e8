"""Issue 26, the pure parts: the overview's days and counts, the export's cells, the charts, the directory's rules."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import orjson
from aiokafka.structs import ConsumerRecord

from models import DeadLetter, encode
from suspensions import overview
from suspensions.api import charts
from suspensions.api.exports import neutralised, suspensions_csv
from tests.support import consumer_records
from workers.directory import rules
from workers.runtime.metrics import Metrics

LONDON = ZoneInfo("Europe/London")


def at(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 3, day, hour, minute, tzinfo=UTC)


def suspension(customer: str, start: datetime, lifted: datetime | None, *reasons: tuple[str, datetime]
               ) -> overview.Suspension:
    return overview.Suspension(customer, start, lifted, list(reasons) or [("manual", start)], "admin:x", None, [],
                               None)


def test_customers_suspended_per_day_count_each_reason_from_when_it_was_added_until_the_lift() -> None:
    # London leaves GMT on 29 March 2026: that day is 23 hours long, and days are the space's own.
    days = overview.DayRange.checked(date(2026, 3, 28), date(2026, 3, 30), LONDON)
    found = [
        suspension("a", at(27, 10), None, ("plan", at(27, 10)), ("manual", at(29, 22, 30))),  # 23:30 local
        suspension("b", at(28, 23, 30), at(29, 12)),  # lifted before the end of the 29th
        suspension("c", at(29, 23, 30), at(30, 9)),  # 00:30 local on the 30th: not on the 29th
    ]
    per_day = overview.suspended_per_day(found, days)
    assert per_day == {date(2026, 3, 28): {"plan": 1, "manual": 1}, date(2026, 3, 29): {"plan": 1, "manual": 1},
                       date(2026, 3, 30): {"plan": 1, "manual": 1}}
    assert days.start_of(date(2026, 3, 30)) - days.start_of(date(2026, 3, 29)) == timedelta(hours=23)
    assert days.day_of(at(29, 23, 30)) == date(2026, 3, 30)
    # The lists behind the figures count as the chart does.
    on_29 = overview.DayRange.checked(date(2026, 3, 29), date(2026, 3, 29), LONDON)
    assert [s.customer_id for s in overview.chosen(found, on_29, "in_force", "manual")] == ["a"]
    assert [s.customer_id for s in overview.chosen(found, on_29, "in_force")] == ["a"]
    assert [s.customer_id for s in overview.chosen(found, on_29, "lifted")] == ["b"]
    on_28 = overview.DayRange.checked(date(2026, 3, 28), date(2026, 3, 28), LONDON)
    assert [s.customer_id for s in overview.chosen(found, on_28, "started")] == ["b"]
    assert [s.customer_id for s in overview.chosen(found, on_29, "started")] == []  # c: 00:30 on the 30th


def test_ranges_and_quantiles() -> None:
    assert overview.quantile([], 0.5) is None
    assert overview.quantile([4.0, 1.0, 3.0, 2.0], 0.5) == 2.0  # nearest rank
    assert overview.quantile([float(v) for v in range(1, 11)], 0.9) == 9.0
    for first, last in ((date(2026, 1, 2), date(2026, 1, 1)), (date(2025, 1, 1), date(2026, 1, 2))):
        try:
            overview.DayRange.checked(first, last, LONDON)
        except overview.BadRange:
            continue
        raise AssertionError(f"{first}..{last} was accepted")


def test_the_export_neutralises_what_a_spreadsheet_would_run() -> None:
    for text in ("=1+1", "+1", "-1", "@SUM(A1)", "\tx", "\rx"):
        assert neutralised(text) == "'" + text
    assert neutralised("maria@x.test") == "maria@x.test"
    row = suspension("=cmd", at(1, 9), at(2, 9))
    row.notes = ["@note", "fine"]
    row.invoices = {"dropped": {"EUR": (2, Decimal("10.50")), "GBP": (1, Decimal("3"))}}
    text = suspensions_csv([(row, None)])
    assert text.splitlines()[1].startswith("'=cmd,,,manual,2026-03-01T09:00:00Z,2026-03-02T09:00:00Z,")
    assert ",admin:x,,,'@note | fine,3,10.50 EUR; 3 GBP,0,,0,\r\n" in text  # per currency, never summed across


def test_charts_escape_their_text_and_never_rely_on_colour_alone() -> None:
    svg = str(charts.bar_chart("c", "<b>title</b>", ["1 Mar", "2 Mar"], [
        charts.Series("<script>x</script>", [1, 2], ["/a?x=1&y=<2>", None]), charts.Series("lifts", [3, None])]))
    assert "<script>" not in svg and "&lt;script&gt;" in svg and "&lt;b&gt;title" in svg
    assert 'href="/a?x=1&amp;y=&lt;2&gt;"' in svg
    assert '<pattern id="c-p0"' in svg and '<pattern id="c-p1"' in svg and "M0,6 L6,0" in svg  # solid, stripes
    assert charts.nice_ceiling(3) == 4 and charts.nice_ceiling(5) == 8 and charts.nice_ceiling(130) == 200
    line = str(charts.line_chart("l", "t", ["a", "b", "c"], [charts.Series("median", [1.0, None, 2.0])]))
    assert "<polyline" not in line  # a gap breaks the line: no run of two points
    assert line.count("<circle") == 2 + 1  # two points and the legend's marker


def test_the_directory_keeps_the_latest_profile_and_letters_only_what_it_alone_reads() -> None:
    space = "harbour"
    signups = consumer_records([
        {"event_id": "e1", "occurred_at": "2026-11-01T09:00:00Z", "space_id": space, "customer_id": "c1",
         "display_name": "Maria", "email": "m@x.test"},
        {"event_id": "e2", "occurred_at": "2026-11-01T09:00:00Z", "space_id": space, "customer_id": "c2"},  # nobody
        {"event_id": "e3", "occurred_at": "no moment", "space_id": space, "customer_id": "c3"},  # the triggers' letter
    ], "customer.signups")
    profiles = consumer_records([
        {"space_id": space, "customer_id": "c1", "display_name": "María", "updated_at": "2026-11-02T09:00:00Z"},
        {"space_id": space, "customer_id": "c1", "display_name": "Old", "updated_at": "2026-10-01T09:00:00Z"},
        {"space_id": space, "customer_id": "c4", "display_name": "x" * 201, "updated_at": "2026-11-02T09:00:00Z"},
    ], "customer.profile")
    letter = DeadLetter.for_record(topic="invoice.jobs", partition=1, offset=7, key=b"c9",
                                   value=orjson.dumps({"space_id": space, "amount": 1}), error="bad\x00", worker="b")
    value = encode(letter)
    letters = [ConsumerRecord("deadletter", 0, 0, 0, 0, b"c9", value, None, 2, len(value), ())]
    planned = rules.plan([*signups, *profiles, *letters], "directory", Metrics())
    assert [(p.customer_id, p.display_name, p.email) for p in planned.profiles] == [("c1", "María", None)]
    assert [(d.record_id, d.space_id, d.error) for d in planned.dead_letters] == [
        ("invoice.jobs:1:7", space, "bad\ufffd")]
    assert [orjson.loads(r.value)["source_topic"] for r in planned.to_publish] == ["customer.profile"]
    assert rules.space_named_by("not json") is None and rules.space_named_by('{"space_id": "a\\u0001"}') is None
