"""JSON Schemas of every record, generated from the models, and the rule that keeps the contract additive.

``docs/schemas/<topic>.json`` is what the code publishes today; ``docs/schemas/released/<release>/``
is the set other teams coded against. ``breaking_changes`` compares the two per topic and names
every change that breaks a reader or a writer, unless the topic's version was raised:

- a field removed (a rename is a removal and an addition), or a required field added;
- an optional field made required;
- a type narrowed (a JSON type, a format, a pattern or bound tightened, a constant changed);
- an enum narrowed (a value removed);
- the key changed.

Adding an optional field, a new topic, an enum value or a header is additive. One narrowing is not a
break: refusing control characters (``STORABLE_TEXT``). A record holding U+0000 was never applied (it
stopped the service); the other C0 characters were stored, and are refused now as the hygiene the
issue that made the rule asked for, announced in docs/contract.md. Readers only ever see less.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from models.base import ACTOR_PATTERN, MULTI_LINE_PATTERN, SINGLE_LINE_PATTERN
from topics.catalogue import ALL_TOPICS, TopicSpec

Schema = dict[str, Any]

# The JSON Schema keywords that bound a value: a change to any of them narrows (or widens) it.
_BOUNDS = ("format", "pattern", "minLength", "maxLength", "minimum", "maximum", "const")
# Pattern changes that refuse only what could never be stored: (released pattern, current pattern).
STORABLE_TEXT = {
    (None, SINGLE_LINE_PATTERN),
    (None, MULTI_LINE_PATTERN),
    # The actor: control characters refused, and (a widening) `rule:<name>` accepted beside the others.
    (r"^(system|admin:[^\s]{1,100})$", ACTOR_PATTERN),
}


def topic_document(spec: TopicSpec) -> dict[str, Any]:
    """The published description of one topic: its key, version and value schema."""
    schema = spec.value_model.model_json_schema()
    schema["additionalProperties"] = True  # the contract: unknown fields are ignored, never an error
    return {"topic": spec.name, "key": spec.key, "version": spec.version,
            "compacted": spec.compacted, "value": schema}


def current_documents() -> dict[str, dict[str, Any]]:
    return {spec.name: topic_document(spec) for spec in ALL_TOPICS}


def write_documents(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, document in current_documents().items():
        path = folder / f"{name}.json"
        path.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
        written.append(path)
    return written


def read_documents(folder: Path) -> dict[str, dict[str, Any]]:
    return {path.stem: json.loads(path.read_text()) for path in sorted(folder.glob("*.json"))}


def _resolve(schema: Schema, root: Schema) -> Schema:
    while "$ref" in schema:
        schema = root["$defs"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def _variants(schema: Schema, root: Schema) -> list[Schema]:
    schema = _resolve(schema, root)
    if "anyOf" in schema:
        return [variant for option in schema["anyOf"] for variant in _variants(option, root)]
    return [schema]


def _accepts(old: Schema, new: Schema, old_root: Schema, new_root: Schema, where: str) -> list[str]:
    """What values ``old`` accepted that ``new`` refuses (both resolved against their documents)."""
    problems: list[str] = []
    new_variants = _variants(new, new_root)
    for old_variant in _variants(old, old_root):
        kind = old_variant.get("type")
        matches = [variant for variant in new_variants if variant.get("type") == kind]
        if not matches:
            problems.append(f"{where}: type {kind or old_variant} no longer accepted")
            continue
        best = min(matches, key=lambda variant: len(_narrowing(old_variant, variant, old_root, new_root, where)))
        problems += _narrowing(old_variant, best, old_root, new_root, where)
    return problems


def _narrowing(old: Schema, new: Schema, old_root: Schema, new_root: Schema, where: str) -> list[str]:
    problems = [f"{where}: {keyword} changed from {old.get(keyword)!r} to {new.get(keyword)!r}"
                for keyword in _BOUNDS if new.get(keyword) is not None and old.get(keyword) != new.get(keyword)
                and not (keyword == "pattern" and (old.get(keyword), new.get(keyword)) in STORABLE_TEXT)]
    if "enum" in old or "enum" in new:
        removed = set(old.get("enum", ())) - set(new.get("enum", ())) if "enum" in new else set()
        if "enum" in new and "enum" not in old:
            problems.append(f"{where}: now restricted to {new['enum']}")
        elif removed:
            problems.append(f"{where}: enum values removed: {sorted(removed)}")
    if old.get("type") == "object":
        problems += object_changes(old, new, old_root, new_root, where)
    if old.get("type") == "array" and "items" in old:
        problems += _accepts(old["items"], new.get("items", {}), old_root, new_root, f"{where}[]")
    return problems


def object_changes(old: Schema, new: Schema, old_root: Schema, new_root: Schema, where: str = "") -> list[str]:
    problems = []
    old_fields, new_fields = old.get("properties", {}), new.get("properties", {})
    old_required, new_required = set(old.get("required", ())), set(new.get("required", ()))
    for name, old_field in old_fields.items():
        path = f"{where}.{name}" if where else name
        if name not in new_fields:
            problems.append(f"{path}: removed")
            continue
        if name in new_required and name not in old_required:
            problems.append(f"{path}: optional made required")
        problems += _accepts(old_field, new_fields[name], old_root, new_root, path)
    for name in sorted(new_required - set(old_fields)):
        problems.append(f"{where + '.' if where else ''}{name}: a new required field")
    if old.get("additionalProperties", True) and new.get("additionalProperties", True) is False:
        problems.append(f"{where or '(record)'}: closed to fields it accepted before")
    return problems


def breaking_changes(released: dict[str, dict[str, Any]], current: dict[str, dict[str, Any]]) -> list[str]:
    """Every change from the released set to the current one that breaks readers or writers."""
    problems = []
    for name, old in released.items():
        new = current.get(name)
        if new is None:
            problems.append(f"{name}: topic removed")
            continue
        if new["version"] > old["version"]:
            continue  # a new version of the topic: a break is announced, not accidental
        if new["key"] != old["key"]:
            problems.append(f"{name}: key changed from {old['key']!r} to {new['key']!r}")
        problems += [f"{name}: {problem}" for problem in
                     object_changes(old["value"], new["value"], old["value"], new["value"])]
    return problems
