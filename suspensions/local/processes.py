"""Worker processes as production runs them (`suspensions run ...`), for the tests and the benchmarks.

Each process gets its settings through the environment, serves /metrics and /readyz on a port
of its own, and is read from outside: readiness, metric totals, peak memory.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from suspensions.local.ports import free_port
from workers.runtime.config import Settings

# Settings a child process needs to reach the same broker and database the same way.
CONNECTION_SETTINGS = (
    "kafka_bootstrap_servers", "database_url", "database_password", "kafka_security_protocol",
    "kafka_sasl_mechanism", "kafka_sasl_username", "kafka_sasl_password", "kafka_ssl_ca_file",
    "kafka_ssl_cert_file", "kafka_ssl_key_file", "kafka_ssl_check_hostname",
)


def service_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The process environment that points a command at these settings' broker and database."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUSPENSIONS_")}
    for name in CONNECTION_SETTINGS:
        value = getattr(settings, name)
        if value is not None:
            value = value.get_secret_value() if isinstance(value, SecretStr) else value
            env[f"SUSPENSIONS_{name.upper()}"] = str(value).lower() if isinstance(value, bool) else str(value)
    env.update(extra)
    return env


def metric_total(port: int, name: str, **labels: str) -> float:
    """Sum of the samples named ``name`` whose labels include ``labels``, read from a process's /metrics
    (0 when there is none)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
        body = response.read().decode()
    return sum(sample.value for family in text_string_to_metric_families(body) for sample in family.samples
               if sample.name == name and labels.items() <= sample.labels.items())


def peak_rss_bytes(pid: int) -> int:
    """VmHWM: the highest resident set size the process reached."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


@dataclass
class WorkerProcess:
    """`suspensions run [workers]` as a real process (all workers and the API by default); its output goes
    to ``log_path``."""

    settings: Settings
    workers: tuple[str, ...] = ()
    extra_env: dict[str, str] = field(default_factory=dict)
    log_path: Path | None = None
    http_port: int = field(default_factory=free_port)
    api_port: int = field(default_factory=free_port)  # the operator API, when the process runs it
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        env = service_env(self.settings, SUSPENSIONS_HTTP_PORT=str(self.http_port),
                          SUSPENSIONS_API_PORT=str(self.api_port), **self.extra_env)
        log: IO[bytes] | int = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.process = subprocess.Popen(
            [sys.executable, "-m", "suspensions", "run", *self.workers], env=env, stdout=log, stderr=log,
        )
        return self

    @property
    def running(self) -> subprocess.Popen[bytes]:
        if self.process is None:
            raise RuntimeError("the worker process was not started")
        return self.process

    def readyz(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/readyz", timeout=1) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    async def wait_ready(self, timeout_s: float = 90.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not await asyncio.to_thread(self.readyz):
            if self.running.poll() is not None:
                raise RuntimeError(f"worker process exited with {self.running.returncode} (log: {self.log_path})")
            if time.monotonic() > deadline:
                raise TimeoutError(f"workers {self.workers or 'all'} not ready within {timeout_s}s "
                                   f"(log: {self.log_path})")
            await asyncio.sleep(0.05)

    def metric(self, name: str, **labels: str) -> float:
        return metric_total(self.http_port, name, **labels)

    def peak_rss_bytes(self) -> int:
        return peak_rss_bytes(self.running.pid)

    def kill(self) -> None:
        """SIGKILL, as a crash would: nothing is finished, committed or left cleanly."""
        self.running.kill()
        self.running.wait()

    def stop(self, timeout_s: float = 40.0) -> int | None:
        """SIGTERM and wait for a clean stop; SIGKILL after the timeout."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode
