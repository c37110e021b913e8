"""The contract evolves additively: the JSON Schemas of every record stay generated from the models, and
nothing breaks a reader or writer of the last released set unless the topic's version is raised."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from topics.schemas import breaking_changes, current_documents, read_documents

DOCS = Path(__file__).resolve().parents[2] / "docs" / "schemas"
RELEASED = DOCS / "released"


def _last_release() -> Path:
    releases = sorted(path for path in RELEASED.iterdir() if path.is_dir())
    assert releases, f"no released schema set under {RELEASED}"
    return releases[-1]


def test_committed_schemas_are_current() -> None:
    committed = read_documents(DOCS)
    assert committed, f"{DOCS} holds no schema: run `suspensions contract schemas`"
    assert committed == current_documents(), "regenerate with: suspensions contract schemas docs/schemas"


def test_nothing_breaks_the_last_released_set() -> None:
    released = read_documents(_last_release())
    assert len(released) >= 12
    assert breaking_changes(released, current_documents()) == []


def _released_command() -> dict[str, dict]:
    released = read_documents(_last_release())
    return {"suspension.commands": copy.deepcopy(released["suspension.commands"])}


@pytest.mark.parametrize(("change", "found"), [
    (lambda v: v["properties"].pop("note"), "note: removed"),
    (lambda v: v["required"].append("note"), "note: optional made required"),
    (lambda v: v["properties"].update(note={"type": "integer"}), "note: type string no longer accepted"),
    (lambda v: v["$defs"]["Action"]["enum"].remove("lift"), "enum values removed: ['lift']"),
    (lambda v: v["properties"]["command_id"].update(maxLength=20), "command_id: maxLength changed"),
    (lambda v: (v["properties"].update(ticket={"type": "string"}), v["required"].append("ticket")),
     "ticket: a new required field"),
])
def test_each_kind_of_break_is_caught(change: Callable[[dict[str, Any]], object], found: str) -> None:
    released = _released_command()
    current = copy.deepcopy(released)
    change(current["suspension.commands"]["value"])
    problems = breaking_changes(released, current)
    assert any(found in problem for problem in problems), problems
    current["suspension.commands"]["version"] += 1  # announced: a new version of the topic
    assert breaking_changes(released, current) == []


def test_additions_and_a_changed_key_are_told_apart() -> None:
    released = _released_command()
    current = copy.deepcopy(released)
    value = current["suspension.commands"]["value"]
    value["properties"]["ticket"] = {"anyOf": [{"type": "string"}, {"type": "null"}], "default": None}
    value["$defs"]["Action"]["enum"].append("freeze")
    assert breaking_changes(released, current) == []  # an optional field and an enum value: additive
    current["suspension.commands"]["key"] = "space_id"
    assert breaking_changes(released, current) == ["suspension.commands: key changed from 'customer_id' to 'space_id'"]
