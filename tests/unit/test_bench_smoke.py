"""The benchmark command keeps working: its pure parts here, a tiny real run in tests/integration."""

from __future__ import annotations

from bench.cli import render
from bench.figures import Figure, percentiles
from bench.load import event_mix


def test_event_mix_counts_the_commands_it_will_fire() -> None:
    events, settings_records, expected = event_mix(300, spaces=3)
    assert len(events) == 300 and len(settings_records) == 9
    assert 0 < expected < 300 * 2


def test_figures_render_with_ratios() -> None:
    figure = Figure("state worker", 10, 50.0, "raw persistence", 100.0, target="ratio >= 0.5", met=True)
    assert figure.ratio == 0.5
    table = render([figure, Figure("raw pass-through (baseline)", 10, 100.0)])
    assert table.row_count == 2


def test_percentiles_are_milliseconds_of_seconds() -> None:
    p50, p99 = percentiles([i / 1000 for i in range(100, 0, -1)])  # 1 ms to 100 ms, unordered
    assert (p50, p99) == (50.5, 99.0)
    assert percentiles([0.002]) == (2.0, 2.0)  # one sample: both are that sample
