"""Dependencies that hang instead of failing: processes stopped with SIGSTOP, and a link that delays.

A stopped PostgreSQL keeps its listening socket: the kernel still accepts connections, and nothing
answers on them or on the ones already open, which is what a hung server or a blackholed network
looks like to a client. Every process of the server is stopped (the postmaster and each backend),
and ``frozen`` resumes them whatever happens in its body, so a failing test never leaves a stopped
server behind for the fixtures' teardown.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from suspensions.local.ports import free_port, wait_for_port
from suspensions.local.postgres import LocalPostgres


def process_tree(pid: int) -> list[int]:
    """The process and every descendant, parents first."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            children.setdefault(parent, []).append(int(entry.name))
    tree, pending = [], [pid]
    while pending:
        current = pending.pop()
        tree.append(current)
        pending.extend(children.get(current, []))
    return tree


def postgres_processes(postgres: LocalPostgres) -> list[int]:
    postmaster = int((postgres.data_dir / "postmaster.pid").read_text().split()[0])
    return process_tree(postmaster)


@contextlib.contextmanager
def frozen(pids: list[int]) -> Iterator[None]:
    """Every process stopped (SIGSTOP) for the body's length, then resumed (SIGCONT)."""
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


@dataclass
class DelayingLink:
    """A TCP forwarder to ``upstream_port`` that holds each chunk a client sends for ``delay_s`` before
    passing it on, in order (a slow network or a slow server: every statement answers later). Answers
    come back at once. It runs on an event loop of its own in a thread, as the broker proxy does."""

    upstream_port: int
    delay_s: float
    port: int = field(default_factory=free_port)
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None

    def start(self) -> DelayingLink:
        ready = threading.Event()

        def serve() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            server = loop.run_until_complete(asyncio.start_server(self._client, "127.0.0.1", self.port))
            ready.set()
            try:
                loop.run_forever()
            finally:
                server.close()
                loop.close()

        self._thread = threading.Thread(target=serve, name="delaying-link", daemon=True)
        self._thread.start()
        ready.wait(10)
        wait_for_port("127.0.0.1", self.port, 10, "the delaying link")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    async def _client(self, client_in: asyncio.StreamReader, client_out: asyncio.StreamWriter) -> None:
        try:
            server_in, server_out = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            client_out.close()
            return
        await asyncio.gather(self._pump(client_in, server_out, self.delay_s), self._pump(server_in, client_out, 0),
                             return_exceptions=True)

    @staticmethod
    async def _pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter, delay_s: float) -> None:
        try:
            while chunk := await source.read(65536):
                if delay_s:
                    await asyncio.sleep(delay_s)  # the latency injected, not a wait for a condition
                sink.write(chunk)
                await sink.drain()
        finally:
            sink.close()
