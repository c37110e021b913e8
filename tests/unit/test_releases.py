"""Releases (issue 27.2): one version said everywhere, a changelog entry per release, migrations that let the
previous release run on (expand/contract), stored formats the previous release can read."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from models.version import SERVICE_VERSION
from suspensions.cli import app
from suspensions.contract import asyncapi_document
from workers.runtime.db.migrate import migration_files
from workers.runtime.health import WorkerHealth, liveness
from workers.runtime.kafka import CLIENT_ID
from workers.runtime.outbox import FORMAT_MSGPACK, READABLE_FORMATS, UnknownOutboxFormat, pack_records, unpack_records
from workers.runtime.publishing import OutgoingRecord
from workers.webhooks.delivery import user_agent

ROOT = Path(__file__).resolve().parents[2]


def test_the_version_is_pyprojects() -> None:
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert declared == SERVICE_VERSION, (
        f"the installed metadata says {SERVICE_VERSION}, pyproject.toml {declared}: run `scripts/dev setup`")


def test_every_surface_says_the_version() -> None:
    said = CliRunner().invoke(app, ["--version"])
    assert (said.exit_code, said.output) == (0, f"suspensions {SERVICE_VERSION}\n")
    assert liveness([WorkerHealth("state")])[1]["version"] == SERVICE_VERSION
    assert f"suspensions/{SERVICE_VERSION}" in user_agent().split()
    assert f"suspensions-{SERVICE_VERSION}" == CLIENT_ID
    info = asyncapi_document()["info"]
    assert (info["version"], info["x-service-version"]) == (SERVICE_VERSION, SERVICE_VERSION)
    # The API's document keeps its own version (its /api/v1 paths) and says the service's beside it.
    openapi = json.loads((ROOT / "docs" / "openapi.json").read_text())["info"]
    assert (openapi["version"], openapi["x-service-version"]) == ("1", SERVICE_VERSION)


def changelog_entries() -> dict[str, str]:
    """CHANGELOG.md's entries by version (``## [0.2.0] - ...``), each its text."""
    text = (ROOT / "CHANGELOG.md").read_text()
    parts = re.split(r"^## \[([^\]]+)\].*$", text, flags=re.MULTILINE)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def test_the_changelog_has_this_release_and_the_previous_one_each_with_its_contract_changes() -> None:
    pointer = (ROOT / "tests" / "reliability" / "previous_release.txt").read_text()
    match = re.search(r"^version\s*=\s*(\S+)", pointer, re.MULTILINE)
    assert match is not None
    entries = changelog_entries()
    for version in (SERVICE_VERSION, match.group(1)):
        assert version in entries, f"CHANGELOG.md has no entry for {version}"
        assert re.search(r"^### Contract changes$", entries[version], re.MULTILINE), (
            f"CHANGELOG.md's {version} entry says nothing of its contract changes")


# --- outbox rows: a format is read by a release before any release writes it -----------------------------


def test_rows_of_the_format_written_now_are_read() -> None:
    record = OutgoingRecord("suspension.state", b"c-1", b"{}", "c-1:1", 3, extra_headers=(("ce_id", b"c-1:1"),))
    assert FORMAT_MSGPACK in READABLE_FORMATS
    assert unpack_records(pack_records([record]), 3, FORMAT_MSGPACK) == [record]


def test_a_row_of_a_newer_format_is_refused_not_misread() -> None:
    """0.1.0 read an unknown format as format 1 (tests/reliability/test_rolling_upgrade.py showed a state worker
    dying on it); from 0.2.0 such a row is refused by name."""
    packed = pack_records([OutgoingRecord("t", b"k", b"v", "id", 0)])
    with pytest.raises(UnknownOutboxFormat, match="format 4"):
        unpack_records(packed, 0, max(READABLE_FORMATS) + 1)


# --- migrations: expand/contract ------------------------------------------------------------------------

# Migrations the rule was written after: these two are not expand/contract (docs/operations.md, "Rolling
# upgrades" says why and how they were deployed). From 013 on, every migration keeps the previous release working.
NOT_EXPAND_CONTRACT = {"003_outbox_per_batch", "012_retention"}
RULE_FROM = "013"

# What breaks a release still running on the migrated schema: a table or column gone or renamed, a type
# changed, a column made required, or a required column added without a default (the old release's inserts
# leave it out). A removal is allowed one release after the code stopped using it, marked `-- contract: ...`.
BREAKING = re.compile(
    r"\bDROP\s+(TABLE|COLUMN|VIEW|FUNCTION|TYPE|SEQUENCE)\b|\bRENAME\b|\bALTER\s+COLUMN\s+\S+\s+(SET\s+DATA\s+)?TYPE\b"
    r"|\bSET\s+NOT\s+NULL\b", re.IGNORECASE)
ADD_COLUMN = re.compile(r"\bADD\s+COLUMN\b", re.IGNORECASE)


def breaking_statements(sql: str) -> list[str]:
    """The statements of a migration a running previous release may fail on, unless marked ``-- contract:``."""
    found = []
    for statement in sql.split(";"):
        code = "\n".join(line.split("--", 1)[0] for line in statement.splitlines())
        required_without_default = (ADD_COLUMN.search(code) and re.search(r"\bNOT\s+NULL\b", code, re.I)
                                    and not re.search(r"\bDEFAULT\b", code, re.I))
        if (BREAKING.search(code) or required_without_default) and "-- contract:" not in statement:
            found.append(" ".join(code.split()))
    return found


def test_the_check_finds_what_would_break_the_previous_release() -> None:
    assert breaking_statements("ALTER TABLE outbox DROP COLUMN format;")
    assert breaking_statements("ALTER TABLE schedules RENAME TO timers;")
    assert breaking_statements("ALTER TABLE schedules ADD COLUMN owner text NOT NULL;")
    assert breaking_statements("ALTER TABLE schedules ALTER COLUMN at TYPE date;")
    assert not breaking_statements("ALTER TABLE schedules ADD COLUMN owner text NOT NULL DEFAULT 'x';")
    assert not breaking_statements("CREATE TABLE t (a text NOT NULL);\nALTER TABLE t ADD COLUMN b text;")
    assert not breaking_statements("-- contract: 0.3.0 stopped reading it (0.2.0 wrote both)\n"
                                   "ALTER TABLE outbox DROP COLUMN format;")


def test_migrations_are_expand_contract_from_the_rule_on() -> None:
    breaking = {version: found for version, sql in migration_files() if (found := breaking_statements(sql))}
    assert {v for v in breaking if v < RULE_FROM} == NOT_EXPAND_CONTRACT, "the audit in docs/operations.md changed"
    later = {v: found for v, found in breaking.items() if v >= RULE_FROM}
    assert not later, (f"{later}: the previous release runs on the migrated schema during a rolling upgrade; add "
                       "now, remove a release later (mark the removal `-- contract: <release that stopped using it>`)")
