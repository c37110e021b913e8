"""The machine-readable contract stays generated from the code."""

from __future__ import annotations

import json
from pathlib import Path

from suspensions.contract import asyncapi_document
from topics import ALL_TOPICS

DOC = Path(__file__).resolve().parents[2] / "docs" / "asyncapi.json"


def test_committed_document_is_current() -> None:
    assert json.loads(DOC.read_text()) == json.loads(json.dumps(asyncapi_document())), (
        "regenerate with: suspensions contract asyncapi > docs/asyncapi.json")


def test_every_topic_is_a_channel_with_its_required_fields() -> None:
    document = asyncapi_document()
    assert {c["address"] for c in document["channels"].values()} == {spec.name for spec in ALL_TOPICS}
    command = document["components"]["schemas"]["SuspensionCommand"]
    assert set(command["required"]) == {"command_id", "issued_at", "space_id", "customer_id", "action", "reason",
                                        "actor"}
