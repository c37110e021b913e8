"""Benchmarks are not part of the test run; this keeps `python -m bench` working on tiny counts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def test_bench_runs_every_case_on_tiny_counts(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUSPENSIONS_")}
    env["SUSPENSIONS_DATABASE_URL"] = "postgresql://postgres@127.0.0.1:1/none"  # start its own
    output = tmp_path / "figures.json"
    result = subprocess.run([sys.executable, "-m", "bench", "--tiny", "--output", str(output)],
                            env=env, capture_output=True, text=True, timeout=280)  # within the suite's 300 s per test
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    figures = {f["case"]: f for f in json.loads(output.read_text())["figures"]}
    assert {"raw pass-through (baseline)", "raw persistence (baseline)", "triggers worker", "state worker",
            "billing consumer", "state worker, lifecycle events off", "raw two-hop relay at 1000/s (baseline)",
            "end to end at 1000/s (signup to decision: suspended)", "end to end at 1000/s (signup to decision: admitted)", "schedules: 100 due in the same minute",
            "api: POST suspend (no wait)", "api: a page of 100 from a space of 500",
            "state worker, two processes in the group", "triggers worker, two processes in the group",
            "billing consumer, two processes in the group", "bulk CLI (published and confirmed)",
            "memory: state worker", "memory: billing worker"} <= set(figures)
    assert figures["state worker"]["ratio"] > 0 and figures["memory: state worker"]["peak_rss_mb"] > 0
    assert all(figures[f"{one}, two processes in the group"]["ratio"] > 0
               for one in ("triggers worker", "state worker", "billing consumer"))
    assert "ratio" in result.stdout
