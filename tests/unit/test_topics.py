"""The topic catalogue is the published contract: names, keys, models, compaction, headers, fields."""

from __future__ import annotations

import re
from pathlib import Path

from topics import ALL_TOPICS, by_name

CONTRACT = Path(__file__).resolve().parents[2] / "docs" / "contract.md"

CONTRACT_TOPICS = {
    "customer.signups": ("customer_id", False),
    "customer.plan-changes": ("customer_id", False),
    "crm.opportunities": ("customer_id", False),
    "customer.profile": ("customer_id", False),
    "settings.signup": ("space_id", True),
    "settings.plans": ("plan_id", True),
    "settings.crm-stages": ("board_id/stage_id", True),
    "settings.spaces": ("space_id", True),
    "invoice.jobs": ("customer_id", False),
    "invoice.status": ("customer_id", False),
    "settings.overdue": ("space_id", True),
    "suspension.commands": ("customer_id", False),
    "suspension.state": ("customer_id", True),
    "suspension.events": ("customer_id", False),
    "invoice.jobs.accepted": ("customer_id", False),
    "invoice.jobs.dropped": ("customer_id", False),
    "deadletter": ("original key", False),
}


def _contract_text() -> str:
    assert CONTRACT.is_file(), f"{CONTRACT} is missing: the contract must live in the repository"
    return CONTRACT.read_text()


def _table_rows(text: str, heading: str) -> list[list[str]]:
    section = text.split(f"## {heading}\n", 1)[1].split("\n#", 1)[0]
    rows = [[cell.strip().strip("`") for cell in line.strip().strip("|").split("|")]
            for line in section.splitlines() if line.startswith("| ")]
    return rows[1:]  # without the header row


def test_catalogue_matches_the_contract() -> None:
    assert {spec.name: (spec.key, spec.compacted) for spec in ALL_TOPICS} == CONTRACT_TOPICS
    assert by_name("suspension.state").configs() == {"cleanup.policy": "compact"}


def test_the_contract_document_lists_every_topic_as_catalogued() -> None:
    rows = {row[0]: row for row in _table_rows(_contract_text(), "Topics")}
    assert set(rows) == {spec.name for spec in ALL_TOPICS}
    for spec in ALL_TOPICS:
        name, key, model, compacted, partitions = rows[spec.name][:5]
        assert (key, model, compacted) == (spec.key, spec.value_model.__name__, "yes" if spec.compacted else "no")
        assert partitions.startswith(str(spec.partitions)) if spec.partitions else not partitions[0].isdigit()


def test_the_contract_document_names_every_header_and_field() -> None:
    text = _contract_text()
    headers = {(row[0], row[1]) for row in _table_rows(text, "Headers *(addition)*")}
    published = {spec for spec in ALL_TOPICS if spec.direction != "inbound"}
    assert headers == {(spec.name, spec.id_header) for spec in published}
    ce_rows = {row[0] for row in _table_rows(text, "CloudEvents *(addition)*")}
    assert ce_rows == {"ce_specversion", "ce_id", "ce_source", "ce_type", "ce_time", "ce_subject", "content-type"}
    documented = set(re.findall(r"`([a-z0-9_]+)`", text))
    for spec in ALL_TOPICS:
        missing = set(spec.value_model.model_fields) - documented
        assert not missing, f"{spec.name}: fields {sorted(missing)} are not in docs/contract.md"
