"""The topic catalogue is the published contract: names, keys, compaction."""

from __future__ import annotations

import re
from pathlib import Path

from topics import ALL_TOPICS, by_name

CONTRACT_TOPICS = {
    "customer.signups": ("customer_id", False),
    "customer.plan-changes": ("customer_id", False),
    "crm.opportunities": ("customer_id", False),
    "settings.signup": ("space_id", True),
    "settings.plans": ("plan_id", True),
    "settings.crm-stages": ("board_id/stage_id", True),
    "invoice.jobs": ("customer_id", False),
    "suspension.commands": ("customer_id", False),
    "suspension.state": ("customer_id", True),
    "invoice.jobs.accepted": ("customer_id", False),
    "invoice.jobs.dropped": ("customer_id", False),
    "deadletter": ("original key", False),
}


def test_catalogue_matches_the_contract() -> None:
    assert {spec.name: (spec.key, spec.compacted) for spec in ALL_TOPICS} == CONTRACT_TOPICS
    assert by_name("suspension.state").configs() == {"cleanup.policy": "compact"}


def test_every_topic_named_in_the_shared_contract_is_catalogued() -> None:
    contract = Path(__file__).resolve().parents[3] / "shared" / "CONTRACT.md"
    if not contract.exists():  # the shared folder sits beside the clone in development and CI
        return
    named = set(re.findall(r"^\| `([a-z.\-]+)`", contract.read_text(), flags=re.MULTILINE))
    assert named == set(CONTRACT_TOPICS)
