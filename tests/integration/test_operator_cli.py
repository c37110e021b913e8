"""Issue 3: the operator CLI end to end: it publishes contract commands, the state worker applies them."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer

from suspensions.local.broker import LocalBroker
from tests.integration import builders
from tests.support import TopicTail, WorkerProcess, run_cli, send, uid
from topics import DEADLETTER, SUSPENSION_COMMANDS, SUSPENSION_STATE
from workers.runtime.config import Settings
from workers.runtime.kafka import create_topics

pytestmark = pytest.mark.integration


def _json(result: subprocess.CompletedProcess[str], exit_code: int = 0) -> Any:
    """The command's JSON output, once it exited as this call must (0; 1 for a customer not found here)."""
    assert result.returncode == exit_code, (result.returncode, result.stderr)
    return json.loads(result.stdout)


async def test_suspend_and_lift_with_wait(settings: Settings, workers: WorkerProcess, tail: TopicTail,
                                          db: asyncpg.Pool) -> None:
    space, customer = uid("space"), uid("cust")
    result = run_cli(settings, "suspend", customer, "--space", space, "--actor", "admin:42",
                     "--note", "unpaid deposit", "--wait", "--json")
    assert result.returncode == 0, result.stderr
    suspended = json.loads(result.stdout)
    assert suspended["outcome"] == "changed"
    assert suspended["state"]["suspended"] is True and suspended["state"]["reasons"] == ["manual"]

    result = run_cli(settings, "lift", customer, "--space", space, "--actor", "admin:42",
                     "--missed-invoices", "waive", "--wait", "--json")
    assert result.returncode == 0, result.stderr
    lifted = json.loads(result.stdout)
    assert lifted["outcome"] == "changed" and lifted["state"]["suspended"] is False

    # Lifting again is a no-op that is still recorded.
    again = _json(run_cli(settings, "lift", customer, "--space", space, "--actor", "admin:43", "--wait", "--json"))
    assert again["outcome"] == "noop"

    commands = await tail.wait_for(SUSPENSION_COMMANDS.name, count=3, customer_id=customer)
    assert [(c["action"], c["actor"]) for c in commands] == [
        ("suspend", "admin:42"), ("lift", "admin:42"), ("lift", "admin:43")]
    assert commands[1]["missed_invoices"] == "waive"

    history = _json(run_cli(settings, "history", customer, "--json"))
    assert [(h["action"], h["actor"], h["outcome"], h["note"]) for h in history] == [
        ("suspend", "admin:42", "changed", "unpaid deposit"),
        ("lift", "admin:42", "changed", None),
        ("lift", "admin:43", "noop", None),
    ]
    status = _json(run_cli(settings, "status", customer, "--json"))
    assert status["suspended"] is False and status["version"] == 2

    human = run_cli(settings, "history", customer)
    assert human.returncode == 0 and "admin:43" in human.stdout and "noop" in human.stdout


async def test_invalid_actor_is_refused_before_sending(settings: Settings) -> None:
    result = run_cli(settings, "suspend", uid("cust"), "--space", "s", "--actor", "bob", "--note", "x" * 2001)
    assert result.returncode == 2
    # Field by field: every problem, each under the field it is about.
    assert "invalid command: actor: " in result.stderr and "; note: " in result.stderr


async def test_wait_times_out_clearly_without_a_state_worker(settings: Settings) -> None:
    # A broker of its own, which no state worker reads: the command can never be applied.
    with LocalBroker() as lonely:
        lonely_settings = settings.model_copy(update={"kafka_bootstrap_servers": lonely.bootstrap_servers})
        await create_topics(lonely_settings)
        result = run_cli(lonely_settings, "suspend", uid("cust"), "--space", uid("space"), "--actor", "admin:1",
                         "--wait", "--timeout", "1")
    assert result.returncode == 3
    assert "was published but not applied within 1.0s" in result.stderr


async def test_tenant_isolation(settings: Settings, workers: WorkerProcess, tail: TopicTail,
                                producer: AIOKafkaProducer) -> None:
    space, other = uid("space"), uid("space")
    customer, neighbour = uid("cust"), uid("cust")
    assert run_cli(settings, "suspend", customer, "--space", space, "--actor", "admin:1", "--wait").returncode == 0
    assert run_cli(settings, "suspend", neighbour, "--space", other, "--actor", "admin:1", "--wait").returncode == 0

    foreign = builders.command(customer, other, action="lift")
    await send(producer, SUSPENSION_COMMANDS.name, customer, foreign)
    [letter] = await tail.wait_for(DEADLETTER.name, key=customer)
    assert space in letter["error"] and other in letter["error"]
    assert json.loads(letter["value"])["command_id"] == foreign["command_id"]
    status = _json(run_cli(settings, "status", customer, "--json"))
    assert status["suspended"] is True and status["version"] == 1

    listed = _json(run_cli(settings, "list", "--space", space, "--json"))
    assert [s["customer_id"] for s in listed] == [customer]
    assert _json(run_cli(settings, "status", customer, "--space", other, "--json"), exit_code=1) is None
    assert _json(run_cli(settings, "history", customer, "--space", other, "--json")) == []

    via_cli = run_cli(settings, "lift", customer, "--space", other, "--actor", "admin:1", "--wait")
    assert via_cli.returncode == 4 and "rejected" in via_cli.stdout


async def test_bulk_suspend_and_lift_with_malformed_lines(
    settings: Settings, workers: WorkerProcess, tail: TopicTail, tmp_path: Path
) -> None:
    space, other = uid("space"), uid("space")
    customers = [uid("bulk") for _ in range(300)]
    foreign = uid("bulk")
    assert run_cli(settings, "suspend", foreign, "--space", other, "--actor", "admin:1", "--wait").returncode == 0
    noted = uid("bulk")
    lines = ["customer_id,space_id,note"] + [f"{c},{space},batch 7" for c in customers]
    # Lines with control characters, malformed each on its own: the lines after them still go out.
    lines.insert(10, f"a\x00b,{space}")
    lines.insert(11, f'{noted},{space},"esc \x1b, form feed \x0c."')
    lines.insert(50, "only-one-column")
    lines.insert(120, f",{space}")
    lines.append(f"{foreign},{space}")  # belongs to another space: rejected by the state worker
    lines.append(f"{customers[0]},{space}")  # already suspended by this file: a no-op
    csv_file = tmp_path / "suspend.csv"
    csv_file.write_text("\n".join(lines) + "\n")

    result = run_cli(settings, "bulk", "suspend", "--file", str(csv_file), "--actor", "admin:7", "--json",
                     "--batch-size", "64")
    summary = json.loads(result.stdout)
    assert result.returncode == 1  # malformed and rejected lines make it non-zero
    # --json counts in the contract's outcomes (the human table says "applied" for changed).
    assert summary["sent"] == 302 and summary["changed"] == 300 and summary["noop"] == 1
    assert summary["rejected"] == 1 and summary["unconfirmed"] == 0
    assert [m["line"] for m in summary["malformed"]] == [11, 12, 51, 121]
    assert "customer_id or space_id holds a control character" in summary["malformed"][0]["error"]
    assert "note holds a control character" in summary["malformed"][1]["error"]
    assert "expected 2 or 3 columns" in summary["malformed"][2]["error"]
    assert "customer_id is empty" in summary["malformed"][3]["error"]

    listed = _json(run_cli(settings, "list", "--space", space, "--suspended", "--json"))
    assert sorted(s["customer_id"] for s in listed) == sorted(customers)  # not `noted`

    lift_file = tmp_path / "lift.csv"
    lift_file.write_text("".join(f"{c},{space}\n" for c in customers))
    result = run_cli(settings, "bulk", "lift", "--file", str(lift_file), "--actor", "admin:7", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["changed"] == 300
    assert _json(run_cli(settings, "list", "--space", space, "--suspended", "--json")) == []
    await tail.wait_for(SUSPENSION_STATE.name, customer_id=customers[-1], suspended=False)


async def test_setup_commands_are_safe_to_run_again(settings: Settings) -> None:
    first = run_cli(settings, "topics", "create")
    assert first.returncode == 0 and "none (all existed)" in first.stdout
    migrated = run_cli(settings, "db", "migrate")
    assert migrated.returncode == 0 and "none (up to date)" in migrated.stdout
