"""The contract as an AsyncAPI 3.0 document, generated from the catalogue, the models and the
worker registry (which worker reads and writes each topic)."""

from __future__ import annotations

from typing import Any

from models.version import SERVICE_VERSION
from topics import ALL_TOPICS, TopicSpec
from workers.registry import WORKERS

DIRECTION_ACTION = {"inbound": "receive", "internal": "receive", "outbound": "send"}


def _topic_configuration(spec: TopicSpec) -> dict[str, object]:
    """The Kafka binding's topic configuration: the cleanup policy, and the retention where the catalogue sets it."""
    configs = spec.configs()
    described: dict[str, object] = {"cleanup.policy": [configs["cleanup.policy"]]}
    if "retention.ms" in configs:
        described["retention.ms"] = int(configs["retention.ms"])
    return described


def _message_name(spec: TopicSpec) -> str:
    return spec.value_model.__name__


CLOUDEVENTS_HEADERS = {
    "ce_specversion": {"type": "string", "const": "1.0"},
    "ce_id": {"type": "string", "description": "the record's id: event_id, or customer_id:version on the state"},
    "ce_source": {"type": "string", "description": "/suspensions"},
    "ce_type": {"type": "string", "description": "suspensions.state, or suspensions.<event type>"},
    "ce_time": {"type": "string", "format": "date-time"},
    "ce_subject": {"type": "string", "description": "the customer_id"},
    "content-type": {"type": "string", "const": "application/json"},
}


def _headers(spec: TopicSpec) -> dict[str, Any]:
    """The headers the service sets on the records it publishes (an upstream's records may carry none)."""
    properties: dict[str, Any] = {spec.id_header: {"type": "string", "description": "the record's id, "
                                                   "for deduplication (where the service publishes)"}}
    if spec.cloudevents:
        properties |= CLOUDEVENTS_HEADERS
    return {"type": "object", "properties": properties,
            "description": "CloudEvents binary mode (Kafka protocol binding) and the id header"
                           if spec.cloudevents else f"{spec.id_header} where the service publishes"}


def asyncapi_document() -> dict[str, Any]:
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    schemas: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    for spec in ALL_TOPICS:
        readers = [worker.name for worker in WORKERS if spec in worker.reads or spec in worker.follows]
        writers = [worker.name for worker in WORKERS if spec in worker.writes]
        channel_id = spec.name.replace(".", "_").replace("-", "_")
        message = _message_name(spec)
        schema = spec.value_model.model_json_schema(ref_template="#/components/schemas/{model}")
        for name, definition in schema.pop("$defs", {}).items():
            schemas[name] = definition
        schemas[message] = schema
        messages[message] = {
            "name": message,
            "contentType": "application/json",
            "payload": {"$ref": f"#/components/schemas/{message}"},
            "headers": _headers(spec),
        }
        channels[channel_id] = {
            "address": spec.name,
            "description": f"key: {spec.key}; {'compacted' if spec.compacted else 'delete'} cleanup",
            "messages": {message: {"$ref": f"#/components/messages/{message}"}},
            "bindings": {"kafka": {"topicConfiguration": _topic_configuration(spec)}},
        }
        operations[f"{DIRECTION_ACTION[spec.direction]}_{channel_id}"] = {
            "action": DIRECTION_ACTION[spec.direction],
            "channel": {"$ref": f"#/channels/{channel_id}"},
            "summary": f"{spec.direction} topic {spec.name}",
            "description": "; ".join(
                [f"read by the {name} worker" for name in readers] + [f"written by the {name} worker" for name in writers]
            ) or "not read or written by any worker",
        }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "suspensions",
            # The service's version (pyproject.toml), as since 0.1.0; the contract's own versions are each
            # topic's `version` (catalogue and schemas), and CHANGELOG.md says what each release changed.
            "version": SERVICE_VERSION,
            "x-service-version": SERVICE_VERSION,
            "description": "Suspends and reinstates customers of coworking operators; keeps suspended "
                           "customers from being invoiced. See docs/contract.md.",
        },
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages, "schemas": dict(sorted(schemas.items()))},
    }
