"""Why a broker cannot be used, in one line: the connection, TLS, the Kafka protocol, authentication.

aiokafka reports a failed bootstrap as "Unable to bootstrap" and logs the cause, if at all, at
debug level. This check walks the same steps one at a time with the configured settings, so the
CLI can exit with the cause, a worker can log it once per backoff step, and readiness and
`suspensions doctor` can say it. It never puts a secret in its message.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import struct
from dataclasses import dataclass

from aiokafka.conn import create_conn
from aiokafka.errors import KafkaError

from workers.runtime.config import Settings, SettingsError

# ApiVersions v0: size, api_key 18, api_version 0, correlation_id 1, client_id "suspensions-check".
_CLIENT_ID = b"suspensions-check"
_API_VERSIONS = struct.pack(">hhih", 18, 0, 1, len(_CLIENT_ID)) + _CLIENT_ID
API_VERSIONS_REQUEST = struct.pack(">i", len(_API_VERSIONS)) + _API_VERSIONS
TLS_ALERT = 0x15  # the first byte of a TLS alert record


@dataclass(frozen=True)
class BrokerCheck:
    address: str
    cause: str | None  # None: the broker answers the Kafka protocol and accepted our credentials

    @property
    def ok(self) -> bool:
        return self.cause is None

    def __str__(self) -> str:
        return f"broker {self.address}: {self.cause or 'OK'}"


class BrokerUnavailable(Exception):
    """A Kafka client could not start; the message is the check's one line."""

    def __init__(self, check: BrokerCheck) -> None:
        super().__init__(str(check))
        self.check = check


def bootstrap_addresses(settings: Settings) -> list[tuple[str, int]]:
    addresses = []
    for server in settings.kafka_bootstrap_servers.split(","):
        host, _, port = server.strip().rpartition(":")
        addresses.append((host or "127.0.0.1", int(port) if port.isdigit() else 9092))
    return addresses


async def check_broker(settings: Settings, timeout_s: float | None = None) -> BrokerCheck:
    """The first bootstrap address that works, or the cause at the first address."""
    timeout = timeout_s if timeout_s is not None else min(10.0, settings.kafka_request_timeout_ms / 1000)
    first: BrokerCheck | None = None
    for host, port in bootstrap_addresses(settings):
        check = BrokerCheck(f"{host}:{port}", await _probe(settings, host, port, timeout))
        if check.ok:
            return check
        first = first or check
    assert first is not None
    return first


async def _probe(settings: Settings, host: str, port: int, timeout: float) -> str | None:
    try:
        context = settings.kafka_ssl_context() if settings.kafka_uses_tls else None
    except SettingsError as error:
        return str(error)
    protocol = settings.kafka_security_protocol
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, ssl=context, server_hostname=host if context else None), timeout)
    except ssl.SSLCertVerificationError as error:
        return f"TLS verification failed: {error.verify_message} (SUSPENSIONS_KAFKA_SSL_CA_FILE, _CHECK_HOSTNAME)"
    except ssl.SSLError as error:
        return f"TLS handshake failed: {error.reason or error}"
    except ConnectionRefusedError:
        return "connection refused (is the broker running, and is this its address?)"
    except TimeoutError:
        if context is not None:
            return (f"no TLS handshake within {timeout:.0f} s: is it a plaintext listener? "
                    f"(SUSPENSIONS_KAFKA_SECURITY_PROTOCOL is {protocol})")
        return f"no answer within {timeout:.0f} s"
    except OSError as error:
        return f"cannot connect: {error.strerror or error}"
    try:
        writer.write(API_VERSIONS_REQUEST)
        await writer.drain()
        head = await asyncio.wait_for(reader.readexactly(4), timeout)
        if head[0] == TLS_ALERT and context is None:
            return ("the broker answered in TLS: it is a TLS listener; set SUSPENSIONS_KAFKA_SECURITY_PROTOCOL to "
                    f"SSL or SASL_SSL (it is {protocol})")
        (size,) = struct.unpack(">i", head)
        body = await asyncio.wait_for(reader.readexactly(size), timeout)
        if struct.unpack(">i", body[:4])[0] != 1:
            return "the broker's answer to ApiVersions is not a Kafka response"
    except ssl.SSLError as error:
        return (f"the broker refused the TLS session: {error.reason or error} (does it require a client "
                "certificate? SUSPENSIONS_KAFKA_SSL_CERT_FILE and _KEY_FILE)")
    except (asyncio.IncompleteReadError, ConnectionError):
        if context is None:
            return ("the broker closed the connection on a plaintext Kafka request: is it a TLS listener? "
                    f"(SUSPENSIONS_KAFKA_SECURITY_PROTOCOL is {protocol})")
        if settings.kafka_ssl_cert_file is None:
            return ("the broker closed the TLS session before answering: does it require a client certificate? "
                    "(SUSPENSIONS_KAFKA_SSL_CERT_FILE and _KEY_FILE are not set)")
        return ("the broker closed the TLS session before answering: does it accept this client certificate? "
                f"({settings.kafka_ssl_cert_file})")
    except TimeoutError:
        return f"no Kafka answer within {timeout:.0f} s (is this a Kafka listener?)"
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
    if protocol.startswith("SASL_"):
        return await _authenticate(settings, host, port, context, timeout)
    return None


async def _authenticate(settings: Settings, host: str, port: int, context: ssl.SSLContext | None,
                        timeout: float) -> str | None:
    options = settings.kafka_security_options()
    try:
        conn = await asyncio.wait_for(create_conn(
            host, port, client_id="suspensions-check", request_timeout_ms=int(timeout * 1000), ssl_context=context,
            security_protocol=settings.kafka_security_protocol, sasl_mechanism=options["sasl_mechanism"],
            sasl_plain_username=options["sasl_plain_username"],
            sasl_plain_password=options["sasl_plain_password"]), timeout)
    except TimeoutError:
        return f"no answer to the SASL {settings.kafka_sasl_mechanism} handshake within {timeout:.0f} s"
    except KafkaError as error:
        said = f": {error.args[0]}" if error.args and error.args[0] else ""
        return (f"authentication failed for user {settings.kafka_sasl_username!r} with "
                f"{settings.kafka_sasl_mechanism} ({type(error).__name__}{said})")
    conn.close()
    return None
