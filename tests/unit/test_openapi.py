"""The operator API's OpenAPI 3.1 document stays generated from the code (docs/openapi.json is it)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, get_args

from suspensions.api.app import build_app
from suspensions.api.schemas import LagStatus
from suspensions.lag import Status
from workers.runtime.metrics import Metrics

DOC = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"


async def _never() -> None:
    raise AssertionError("the document needs no connection")


def document() -> dict[str, object]:
    return build_app(_never, Metrics(), _never).openapi()  # type: ignore[arg-type]


def test_committed_document_is_current() -> None:
    assert DOC.is_file(), "regenerate with: suspensions contract openapi > docs/openapi.json"
    assert json.loads(DOC.read_text()) == json.loads(json.dumps(document())), (
        "regenerate with: suspensions contract openapi > docs/openapi.json")


def test_the_fixed_paths_are_there_with_their_status_codes() -> None:
    spec = document()
    assert str(spec["openapi"]).startswith("3.1")
    paths = spec["paths"]
    assert isinstance(paths, dict)
    prefix = "/api/v1/spaces/{space}"
    for path in (f"{prefix}/customers", f"{prefix}/customers/{{customer}}", f"{prefix}/customers/{{customer}}/history",
                 f"{prefix}/customers/{{customer}}/suspend", f"{prefix}/customers/{{customer}}/lift",
                 f"{prefix}/bulk", f"{prefix}/bulk/{{bulk_id}}", f"{prefix}/invoices/dropped", "/api/v1/lag"):
        assert path in paths, path
    suspend = paths[f"{prefix}/customers/{{customer}}/suspend"]["post"]
    assert {"202", "200", "401", "403", "404", "422", "504"} <= set(suspend["responses"])


def untyped(schema: dict[str, Any], components: dict[str, Any], where: str, seen: set[str]) -> list[str]:
    """Where a schema accepts anything: no type (``{}``), an object without properties nor typed values
    (``dict[str, Any]``), values beside its properties that may be anything, an array of anything.
    Followed through references (each once), properties, items and unions."""
    if "$ref" in schema:
        name = str(schema["$ref"]).rsplit("/", 1)[-1]
        if name in seen:
            return []
        seen.add(name)
        return untyped(components[name], components, name, seen)
    for union in ("anyOf", "oneOf", "allOf"):
        if union in schema:
            return [problem for index, part in enumerate(schema[union])
                    for problem in untyped(part, components, f"{where}.{union}[{index}]", seen)]
    kind = schema.get("type")
    if kind is None:
        return [] if "enum" in schema or "const" in schema else [where]
    if kind == "array":
        return untyped(schema["items"], components, f"{where}[]", seen) if schema.get("items") else [where]
    if kind == "object":
        properties: dict[str, Any] = schema.get("properties", {})
        values = schema.get("additionalProperties")
        problems = [problem for name, part in properties.items()
                    for problem in untyped(part, components, f"{where}.{name}", seen)]
        if isinstance(values, dict):
            problems += untyped(values, components, f"{where}.*", seen)
        elif values is True or (not properties and values is None):
            problems.append(where)
        return problems
    return []


def untyped_answers(spec: dict[str, Any]) -> list[str]:
    """Every 2xx answer of every operation whose schema is missing or accepts anything somewhere."""
    components: dict[str, Any] = spec.get("components", {}).get("schemas", {})
    problems = []
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            for status, response in operation["responses"].items():
                if not str(status).startswith("2"):
                    continue
                where = f"{method.upper()} {path} {status}"
                content = response.get("content", {})
                if not content:
                    problems.append(f"{where}: no content")
                for media, body in content.items():
                    schema = body.get("schema") or {}
                    problems += [f"{where} {media}: {spot}"
                                 for spot in untyped(schema, components, "response", set())]
    return problems


def test_every_success_answer_is_typed() -> None:
    """A generated client is only as good as the models: no 2xx answer may be untyped anywhere."""
    assert untyped_answers(json.loads(DOC.read_text())) == []


def test_an_untyped_answer_is_caught() -> None:
    def spec(schema: dict[str, Any], **components: dict[str, Any]) -> dict[str, Any]:
        return {"paths": {"/x": {"get": {"responses": {"200": {"content": {"application/json": {"schema": schema}}},
                                                       "404": {"description": "not found"}}}}},
                "components": {"schemas": components}}

    assert untyped_answers(spec({"type": "object", "additionalProperties": True})) != []  # dict[str, Any]
    assert untyped_answers(spec({"type": "array", "items": {"type": "object"}})) != []  # list[dict]
    assert untyped_answers(spec({})) != []  # Any
    assert untyped_answers(spec({"$ref": "#/components/schemas/A"},
                                A={"type": "object", "properties": {"x": {}}})) != []  # a field of Any
    assert untyped_answers(spec({"$ref": "#/components/schemas/A"},
                                A={"type": "object", "properties": {"x": {"type": "integer"}},
                                   "additionalProperties": {"type": "integer"}})) == []
    assert untyped_answers({"paths": {"/x": {"get": {"responses": {"200": {"description": "no body"}}}}}}) != []


def test_lag_statuses_are_burrows() -> None:
    assert set(get_args(LagStatus)) == {status.name for status in Status}
