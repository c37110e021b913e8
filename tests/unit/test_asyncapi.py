"""The machine-readable contract stays generated from the code."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema

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


ASYNCAPI_SCHEMA = (Path(__file__).resolve().parents[2] / ".cache" / "asyncapi-specs" / "node_modules" / "@asyncapi"
                   / "specs" / "schemas" / "3.0.0.json")


def test_the_document_is_valid_asyncapi_3() -> None:
    """Against the AsyncAPI initiative's own JSON Schema of 3.0.0 (installed by `scripts/dev test`)."""
    assert ASYNCAPI_SCHEMA.is_file(), f"{ASYNCAPI_SCHEMA} is missing: run `scripts/dev test`, which installs it"
    validator = jsonschema.Draft7Validator(json.loads(ASYNCAPI_SCHEMA.read_text()))
    errors = sorted(validator.iter_errors(json.loads(DOC.read_text())), key=lambda error: list(error.path))
    assert not errors, "\n".join(f"{'/'.join(map(str, e.path))}: {e.message}" for e in errors[:10])


def test_the_validation_catches_a_broken_document() -> None:
    validator = jsonschema.Draft7Validator(json.loads(ASYNCAPI_SCHEMA.read_text()))
    broken = asyncapi_document()
    broken["operations"]["receive_customer_signups"]["action"] = "consume"  # deep inside: send or receive only
    assert list(validator.iter_errors(broken))


def test_the_new_topic_and_its_headers_are_in_the_document() -> None:
    document = asyncapi_document()
    assert document["channels"]["suspension_events"]["address"] == "suspension.events"
    for message in ("LifecycleEvent", "SuspensionState"):
        headers = document["components"]["messages"][message]["headers"]["properties"]
        assert {"ce_specversion", "ce_id", "ce_source", "ce_type", "ce_time", "ce_subject", "content-type"} <= set(headers)
