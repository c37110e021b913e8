"""The tree's own checks, run by the test command: lint, types, and the layers' import direction."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
LAYERED_PACKAGES = ("models", "topics", "workers", "suspensions")


def run(*command: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=240)


def test_ruff_finds_nothing() -> None:
    result = run(sys.executable, "-m", "ruff", "check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_finds_nothing() -> None:
    result = run(sys.executable, "-m", "mypy")
    assert result.returncode == 0, result.stdout + result.stderr


def test_layers_import_only_downwards() -> None:
    result = run(str(BIN / "lint-imports"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_the_layer_check_fails_on_an_upward_import(tmp_path: Path) -> None:
    """The same contracts over a copy of the tree with one upward import planted: it must break."""
    for package in LAYERED_PACKAGES:
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    (tmp_path / "topics" / "planted.py").write_text("from workers.runtime.config import Settings\n")
    result = run(str(BIN / "lint-imports"), cwd=tmp_path)
    assert result.returncode != 0
    assert "topics.planted -> workers.runtime.config" in result.stdout
