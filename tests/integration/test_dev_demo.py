"""The newcomer's first command keeps working: `suspensions dev --demo` on a machine with nothing running."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration


def test_dev_demo_runs_every_step_and_stops_everything() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUSPENSIONS_")}
    env["SUSPENSIONS_DATABASE_URL"] = "postgresql://postgres@127.0.0.1:1/none"  # unreachable: start our own
    result = subprocess.run([sys.executable, "-m", "suspensions", "dev", "--demo", "--exit-when-done"],
                            env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for expected in ("SUSPENDED reasons=['signup']", "SUSPENDED reasons=['plan']", "SUSPENDED reasons=['crm_stage']",
                     "SUSPENDED reasons=['manual']", "SUSPENDED reasons=['overdue']",
                     "active (decided: not suspended)", "DROPPED", "REBILLED after lift", "active (lifted)",
                     "deadletter customer.signups", "demo complete", "stopped: broker, database and workers",
                     "suspension.suspended for alice-"):  # the demo's webhook receiver, its signature verified
        assert expected in result.stdout, expected
    started = [line for line in result.stdout.splitlines() if line.strip().startswith(("broker", "postgresql"))]
    port = started[0].rsplit(":", 1)[1]
    assert subprocess.run(["pgrep", "-f", f"tcp://127.0.0.1:{port}"], capture_output=True).returncode == 1
