"""The operator API's OpenAPI 3.1 document stays generated from the code (docs/openapi.json is it)."""

from __future__ import annotations

import json
from pathlib import Path

from suspensions.api.app import build_app
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
