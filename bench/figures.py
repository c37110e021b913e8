"""Figures: what each case reports, and the percentiles behind its latencies."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field


@dataclass
class Figure:
    case: str
    records: int
    records_per_s: float | None = None
    baseline: str | None = None
    baseline_records_per_s: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    p99_last_third_ms: float | None = None  # a latency case: the p99 of the last third of its run (a growing tail)
    peak_rss_mb: float | None = None
    seconds: float | None = None
    target: str = ""
    met: bool | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def ratio(self) -> float | None:
        if self.records_per_s and self.baseline_records_per_s:
            return self.records_per_s / self.baseline_records_per_s
        return None


def figure_named(figures: list[Figure], case: str) -> Figure | None:
    """A case measured earlier in the run, which a later case compares itself with."""
    return next((f for f in figures if f.case == case), None)


def percentiles(latencies: list[float]) -> tuple[float, float]:
    """p50 and p99 in milliseconds, of latencies in seconds."""
    ordered = sorted(latencies)
    return statistics.median(ordered) * 1000, ordered[max(0, int(len(ordered) * 0.99) - 1)] * 1000
