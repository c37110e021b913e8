"""The previous release, built from git and installed into a virtualenv of its own, for the rolling-upgrade
tests: which commit it is (``previous_release.txt``), how it is built (once per commit and interpreter,
cached), and its workers as processes beside this tree's, on the same broker and database."""

from __future__ import annotations

import contextlib
import fcntl
import io
import os
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from suspensions.local.processes import WorkerProcess as LocalWorkerProcess
from suspensions.local.processes import service_env
from tests.support import TEST_PROCESS_ENV
from workers.runtime.config import Settings

ROOT = Path(__file__).resolve().parents[2]
POINTER = Path(__file__).with_name("previous_release.txt")
CACHE = Path(os.environ.get("SUSPENSIONS_PREVIOUS_RELEASE_CACHE",
                            Path.home() / ".cache" / "suspensions-previous-release"))


@dataclass(frozen=True)
class Release:
    version: str
    commit: str
    python: Path  # the interpreter of its own virtualenv
    home: Path  # a folder outside this tree: its processes run there, so that `-m suspensions` is the release's


def named_release() -> tuple[str, str]:
    """The version and commit ``previous_release.txt`` names."""
    fields = {name.strip(): value.strip() for line in POINTER.read_text().splitlines()
              if line.strip() and not line.startswith("#") for name, value in [line.split("=", 1)]}
    return fields["version"], fields["commit"]


def _git(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, timeout=120)


def resolve_commit(version: str, commit: str) -> str:
    """The full id of the release's commit, which must be in this clone's history (a shallow clone lacks it:
    `git fetch --unshallow`). Where the tag v<version> is there too, it must name the same commit."""
    found = _git("rev-parse", "--verify", "--quiet", f"{commit}^{{commit}}")
    assert found.returncode == 0, (
        f"the previous release's commit {commit} (tests/reliability/previous_release.txt) is not in this clone: "
        f"fetch the full history (git fetch --unshallow) ({found.stderr.decode().strip()})")
    full = found.stdout.decode().strip()
    tagged = _git("rev-parse", "--verify", "--quiet", f"refs/tags/v{version}^{{commit}}")
    if tagged.returncode == 0:
        assert tagged.stdout.decode().strip() == full, (
            f"the tag v{version} and tests/reliability/previous_release.txt name different commits")
    return full


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """One build per key at a time, across concurrent test runs."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _run(args: list[str], cwd: Path, log: IO[str]) -> None:
    log.write(f"$ {' '.join(args)}\n")
    log.flush()
    done = subprocess.run(args, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, timeout=900,
                          env={k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")})
    assert done.returncode == 0, f"{args[:4]}... failed (log: {log.name})"


def installed_version(python: Path, home: Path) -> str:
    """The version the release's own virtualenv has installed, read there (never this tree's)."""
    done = subprocess.run([str(python), "-c", "import importlib.metadata as m; print(m.version('suspensions'))"],
                          cwd=home, capture_output=True, text=True, timeout=60,
                          env={k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")})
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def previous_release() -> Release:
    """The previous release, installed: built on first use, then reused for the same commit and interpreter
    (under SUSPENSIONS_PREVIOUS_RELEASE_CACHE, default ~/.cache/suspensions-previous-release). Its own
    constraints.txt pins its dependencies, so the build takes them from pip's cache when the tree's are the same."""
    version, named = named_release()
    commit = resolve_commit(version, named)
    key = f"{commit}-py{sys.version_info.major}{sys.version_info.minor}"
    folder = CACHE / key
    python = folder / "venv" / "bin" / "python"
    marker = folder / "installed"
    with _locked(CACHE / f"{key}.lock"):
        if not marker.is_file():
            shutil.rmtree(folder, ignore_errors=True)
            (folder / "src").mkdir(parents=True)
            with open(folder / "build.log", "w") as log:
                archive = _git("archive", "--format=tar", commit)
                assert archive.returncode == 0, archive.stderr.decode()
                with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
                    tar.extractall(folder / "src", filter="data")
                _run([sys.executable, "-m", "venv", str(folder / "venv")], folder, log)
                _run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-input",
                      "-c", str(folder / "src" / "constraints.txt"), str(folder / "src")], folder, log)
            shutil.rmtree(folder / "src")  # installed: the virtualenv holds everything it runs
            installed = installed_version(python, folder)
            assert installed == version, f"the release at {commit} installs as {installed}, not {version}"
            marker.write_text(f"{version} {commit}\n")
    return Release(version, commit, python, folder)


def release_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment of a previous release's process: this test's broker and database, nothing of this tree."""
    env = service_env(settings, **{**TEST_PROCESS_ENV, **extra})
    for name in ("PYTHONPATH", "VIRTUAL_ENV"):
        env.pop(name, None)
    return env


@dataclass
class ReleaseWorkerProcess(LocalWorkerProcess):
    """`suspensions run [workers]` of the previous release: its interpreter, started outside this tree (the
    working folder comes first on `sys.path` with `-m`), with the tests' environment."""

    release: Release | None = field(default=None)

    def start(self) -> ReleaseWorkerProcess:
        assert self.release is not None
        env = release_env(self.settings, SUSPENSIONS_HTTP_PORT=str(self.http_port),
                          SUSPENSIONS_API_PORT=str(self.api_port), **self.extra_env)
        log: IO[bytes] | int = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.process = subprocess.Popen([str(self.release.python), "-m", "suspensions", "run", *self.workers],
                                        cwd=self.release.home, env=env, stdout=log, stderr=log)
        return self


def run_release_cli(release: Release, settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    """`suspensions ARGS` of the previous release."""
    return subprocess.run([str(release.python), "-m", "suspensions", *args], cwd=release.home,
                          env=release_env(settings), capture_output=True, text=True, timeout=120)
