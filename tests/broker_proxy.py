"""A secured front for the local broker's plaintext listener: TLS (mutual if asked), SASL/PLAIN if asked.

The local broker's own TLS and SASL could not be used (see the project's notes on the local broker),
so the tests put this proxy in front of it and start the broker advertising the proxy's address:
every client, after bootstrap, reconnects through the proxy. With ``sasl_users`` the proxy speaks the
Kafka SASL handshake itself (SaslHandshake v0-1, SaslAuthenticate v0-1 with PLAIN), as a broker with
a SASL_PLAINTEXT or SASL_SSL listener does, and forwards nothing but ApiVersions until the client
authenticated. It runs on an event loop of its own in a thread, so a test that blocks its loop
(a subprocess, a sleep-free wait in a thread) never stalls the clients behind it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import struct
import threading
from dataclasses import dataclass, field

from suspensions.local.ports import free_port, wait_for_port

API_VERSIONS, SASL_HANDSHAKE, SASL_AUTHENTICATE = 18, 17, 36
SASL_AUTHENTICATION_FAILED, UNSUPPORTED_SASL_MECHANISM, ILLEGAL_SASL_STATE = 58, 33, 34


def _string(value: str | None) -> bytes:
    if value is None:
        return struct.pack(">h", -1)
    raw = value.encode()
    return struct.pack(">h", len(raw)) + raw


@dataclass
class BrokerProxy:
    target_port: int
    ssl_context: ssl.SSLContext | None = None  # server side: certificate, and CERT_REQUIRED for mutual TLS
    sasl_users: dict[str, str] | None = None
    port: int = field(default_factory=free_port)
    accepted: int = 0  # connections that passed TLS and, with SASL, authentication
    refused: int = 0  # SASL authentications refused
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None
    _server: asyncio.AbstractServer | None = None

    def start(self) -> BrokerProxy:
        ready = threading.Event()

        def serve() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            self._server = loop.run_until_complete(
                asyncio.start_server(self._handle, "127.0.0.1", self.port, ssl=self.ssl_context))
            ready.set()
            loop.run_forever()
            self._server.close()
            loop.run_until_complete(self._server.wait_closed())
            loop.close()

        self._thread = threading.Thread(target=serve, name=f"broker-proxy-{self.port}", daemon=True)
        self._thread.start()
        ready.wait(10)
        wait_for_port("127.0.0.1", self.port, 10, "the broker proxy")
        return self

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)

    async def _handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            client_writer.close()
            return
        try:
            if self.sasl_users is not None and not await self._authenticate(
                    client_reader, client_writer, upstream_reader, upstream_writer):
                return
            self.accepted += 1
            await asyncio.gather(self._pump(client_reader, upstream_writer),
                                 self._pump(upstream_reader, client_writer))
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            for writer in (client_writer, upstream_writer):
                writer.close()

    @staticmethod
    async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        with contextlib.suppress(Exception):
            writer.close()

    async def _authenticate(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter,
                            upstream_reader: asyncio.StreamReader, upstream_writer: asyncio.StreamWriter) -> bool:
        """Answer the SASL handshake; forward ApiVersions meanwhile. True once the client authenticated."""
        mechanism_ok = False
        while True:
            (size,) = struct.unpack(">i", await client_reader.readexactly(4))
            request = await client_reader.readexactly(size)
            api_key, api_version, correlation_id = struct.unpack(">hhi", request[:8])
            (client_id_size,) = struct.unpack(">h", request[8:10])
            body = request[10 + max(client_id_size, 0):]
            if api_key == API_VERSIONS:
                upstream_writer.write(struct.pack(">i", size) + request)
                await upstream_writer.drain()
                (reply_size,) = struct.unpack(">i", await upstream_reader.readexactly(4))
                client_writer.write(struct.pack(">i", reply_size) + await upstream_reader.readexactly(reply_size))
                await client_writer.drain()
            elif api_key == SASL_HANDSHAKE:
                (mechanism_size,) = struct.unpack(">h", body[:2])
                mechanism = body[2:2 + mechanism_size].decode()
                mechanism_ok = mechanism == "PLAIN"
                error = 0 if mechanism_ok else UNSUPPORTED_SASL_MECHANISM
                reply = struct.pack(">ihi", correlation_id, error, 1) + _string("PLAIN")
                client_writer.write(struct.pack(">i", len(reply)) + reply)
                await client_writer.drain()
                if not mechanism_ok:
                    return False
            elif api_key == SASL_AUTHENTICATE and mechanism_ok:
                (token_size,) = struct.unpack(">i", body[:4])
                _, username, password = body[4:4 + token_size].split(b"\0", 2)
                assert self.sasl_users is not None
                ok = self.sasl_users.get(username.decode()) == password.decode()
                reply = struct.pack(">ih", correlation_id, 0 if ok else SASL_AUTHENTICATION_FAILED)
                reply += _string(None if ok else "Authentication failed: invalid username or password")
                reply += struct.pack(">i", 0)  # auth bytes: none
                if api_version >= 1:
                    reply += struct.pack(">q", 0)  # session lifetime: unlimited
                client_writer.write(struct.pack(">i", len(reply)) + reply)
                await client_writer.drain()
                if not ok:
                    self.refused += 1
                return ok
            else:  # anything else before authentication: a broker closes the connection
                return False
