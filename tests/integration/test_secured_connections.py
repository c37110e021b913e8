"""Issue 12: every client over TLS (mutual TLS included) and SASL, and a clear cause when it cannot connect.

The broker is the local one behind a TLS- and SASL-speaking proxy (tests/broker_proxy.py) that it
advertises, so every client reconnects through the proxy after bootstrap. Certificates come from a
throwaway CA made here.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import subprocess
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest
import pytest_asyncio
import trustme
from pydantic import SecretStr

from suspensions.local.postgres import LocalPostgres
from tests.broker_proxy import BrokerProxy
from tests.integration import builders
from tests.support import WorkerProcess, create_database, publish_setting, run_cli, run_cli_env, uid, wait_until
from topics import CUSTOMER_SIGNUPS, INVOICE_JOBS, INVOICE_JOBS_DROPPED, SETTINGS_SIGNUP, SUSPENSION_STATE
from workers.runtime.broker_check import check_broker
from workers.runtime.config import Settings
from workers.runtime.db.migrate import migrate
from workers.runtime.kafka import create_topics, make_admin, make_consumer, producer, start_client

pytestmark = pytest.mark.integration

PASSWORD = "pa55-w0rd-never-printed"
ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Pki:
    folder: Path
    ca: trustme.CA
    other_ca: trustme.CA

    def path(self, name: str) -> Path:
        return self.folder / name


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    folder = tmp_path_factory.mktemp("pki")
    pki = Pki(folder, trustme.CA(), trustme.CA())
    pki.ca.cert_pem.write_to_path(str(pki.path("ca.pem")))
    pki.other_ca.cert_pem.write_to_path(str(pki.path("other-ca.pem")))
    client = pki.ca.issue_cert("suspensions-client")
    client.cert_chain_pems[0].write_to_path(str(pki.path("client.pem")))
    client.private_key_pem.write_to_path(str(pki.path("client.key")))
    return pki


def _server_context(pki: Pki, *, mutual: bool) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    pki.ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    if mutual:
        pki.ca.configure_trust(context)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


@dataclass
class Secured:
    settings: Settings  # a client configured as a production deployment would be
    proxy: BrokerProxy


async def _secured_stack(base: Settings, proxy: BrokerProxy, **security: object) -> AsyncIterator[Secured]:
    from suspensions.local.broker import LocalBroker

    broker = LocalBroker(advertised_port=proxy.port).start()
    proxy.target_port = broker.port
    proxy.start()
    try:
        url = await create_database(base, "tls")
        await migrate(url)
        secured = base.model_copy(update={"kafka_bootstrap_servers": f"127.0.0.1:{proxy.port}", "database_url": url,
                                          **security})
        await create_topics(secured)
        yield Secured(secured, proxy)
    finally:
        proxy.stop()
        broker.stop()


@pytest_asyncio.fixture(scope="module")
async def mutual_tls(settings: Settings, pki: Pki) -> AsyncIterator[Secured]:
    proxy = BrokerProxy(0, ssl_context=_server_context(pki, mutual=True))
    async for secured in _secured_stack(settings, proxy, kafka_security_protocol="SSL",
                                        kafka_ssl_ca_file=pki.path("ca.pem"),
                                        kafka_ssl_cert_file=pki.path("client.pem"),
                                        kafka_ssl_key_file=pki.path("client.key")):
        yield secured


@pytest_asyncio.fixture(scope="module")
async def sasl_ssl(settings: Settings, pki: Pki) -> AsyncIterator[Secured]:
    proxy = BrokerProxy(0, ssl_context=_server_context(pki, mutual=False), sasl_users={"svc-suspensions": PASSWORD})
    async for secured in _secured_stack(settings, proxy, kafka_security_protocol="SASL_SSL",
                                        kafka_ssl_ca_file=pki.path("ca.pem"), kafka_sasl_mechanism="PLAIN",
                                        kafka_sasl_username="svc-suspensions",
                                        kafka_sasl_password=SecretStr(PASSWORD)):
        yield secured


async def _read_until(settings: Settings, topic: str, match: dict[str, object], timeout_s: float = 60) -> dict:
    """The first record of ``topic`` matching ``match``, read through the secured listener."""
    consumer = make_consumer(settings, None, topic)
    await consumer.start()
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                for record in records:
                    value = orjson.loads(record.value)
                    if all(value.get(k) == v for k, v in match.items()):
                        return value
        raise AssertionError(f"no {topic} record matching {match} within {timeout_s}s")
    finally:
        await consumer.stop()


async def _service_works_end_to_end(secured: Secured, tmp_path: Path) -> None:
    settings = secured.settings
    worker = WorkerProcess(settings, log_path=tmp_path / "workers.log").start()
    try:
        await worker.wait_ready()
        space, customer = uid("space"), uid("cust")
        async with producer(settings) as kafka:
            await publish_setting(kafka, worker, SETTINGS_SIGNUP.name, space, builders.signup_setting(space, True))
            await kafka.send_and_wait(CUSTOMER_SIGNUPS.name, orjson.dumps(builders.signup(customer, space)),
                                      key=customer.encode())
            state = await _read_until(settings, SUSPENSION_STATE.name, {"customer_id": customer})
            assert state["suspended"] is True and state["reasons"] == ["signup"]
            job = builders.invoice_job(customer, space)
            await kafka.send_and_wait(INVOICE_JOBS.name, orjson.dumps(job), key=customer.encode())
            await _read_until(settings, INVOICE_JOBS_DROPPED.name, {"job_id": job["job_id"]})

        # The CLI suspends and reads through the same listener; lag and doctor report.
        other = uid("cust")
        suspended = await asyncio.to_thread(run_cli, settings, "suspend", other, "--space", space,
                                            "--actor", "admin:ops", "--wait", "--json")
        assert suspended.returncode == 0, suspended.stderr
        assert json.loads(suspended.stdout)["outcome"] == "changed"
        status = await asyncio.to_thread(run_cli, settings, "status", other, "--json")
        assert json.loads(status.stdout)["suspended"] is True
        lag = await asyncio.to_thread(run_cli, settings, "lag", "--window", "0", "--json")
        assert {report["group"] for report in json.loads(lag.stdout)} >= {settings.state_group}, lag.stderr
        doctor = await asyncio.to_thread(run_cli, settings, "doctor", "--json")
        report = json.loads(doctor.stdout)
        assert doctor.returncode == 0 and report["ok"] is True, doctor.stdout
        assert "TLS verified" in report["checks"][0]["detail"]
        assert secured.proxy.accepted > 0  # every one of them went through the secured listener
    finally:
        assert worker.stop() == 0


async def test_the_service_works_over_mutual_tls(mutual_tls: Secured, tmp_path: Path) -> None:
    await _service_works_end_to_end(mutual_tls, tmp_path)


async def test_the_service_works_over_sasl_ssl(sasl_ssl: Secured, tmp_path: Path) -> None:
    await _service_works_end_to_end(sasl_ssl, tmp_path)
    doctor = json.loads((await asyncio.to_thread(run_cli, sasl_ssl.settings, "doctor", "--json")).stdout)
    assert "authenticated with PLAIN" in doctor["checks"][0]["detail"]


def _broken(secured: Secured, pki: Pki, case: str) -> Settings:
    changes: dict[str, object] = {
        "wrong CA": {"kafka_ssl_ca_file": pki.path("other-ca.pem")},
        "no client certificate": {"kafka_ssl_cert_file": None, "kafka_ssl_key_file": None},
        "plaintext client": {"kafka_security_protocol": "PLAINTEXT"},
        "wrong password": {"kafka_sasl_password": SecretStr("not-the-password")},
    }[case]  # type: ignore[assignment]
    return secured.settings.model_copy(update=changes)


TLS_CASES = [
    ("wrong CA", "TLS verification failed"),
    ("no client certificate", "client certificate"),
    ("plaintext client", "TLS listener"),
]


@pytest.mark.parametrize(("case", "cause"), TLS_CASES, ids=[case for case, _ in TLS_CASES])
async def test_a_broken_tls_connection_says_what_is_wrong(mutual_tls: Secured, pki: Pki, case: str,
                                                          cause: str) -> None:
    await _says_what_is_wrong(_broken(mutual_tls, pki, case), cause)


async def test_a_wrong_password_says_so(sasl_ssl: Secured, pki: Pki) -> None:
    await _says_what_is_wrong(_broken(sasl_ssl, pki, "wrong password"),
                              "authentication failed for user 'svc-suspensions' with PLAIN")


async def _says_what_is_wrong(broken: Settings, cause: str) -> None:
    """The CLI exits 2 within the request timeout with one line naming the broker and the cause; the
    doctor reports the same and exits 1; neither shows the password."""
    address = f"broker {broken.kafka_bootstrap_servers}:"
    started = time.monotonic()
    result = await asyncio.to_thread(run_cli, broken, "suspend", uid("cust"), "--space", uid("space"),
                                     "--actor", "admin:ops")
    elapsed = time.monotonic() - started
    assert result.returncode == 2, result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and address in lines[0] and cause in lines[0], result.stderr
    assert elapsed < broken.kafka_request_timeout_ms / 1000, elapsed
    assert PASSWORD not in result.stdout + result.stderr

    doctor = await asyncio.to_thread(run_cli, broken, "doctor", "--json")
    report = json.loads(doctor.stdout)
    assert doctor.returncode == 1 and report["ok"] is False
    assert report["checks"][0]["status"] == "FAIL" and cause in report["checks"][0]["detail"]
    assert PASSWORD not in doctor.stdout + doctor.stderr


@pytest.fixture
def password_file(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "sasl-password"
    path.write_text(PASSWORD + "\n")
    yield path


async def test_a_worker_retries_says_why_and_never_shows_the_secret(sasl_ssl: Secured, pki: Pki, tmp_path: Path,
                                                                     password_file: Path) -> None:
    broken = sasl_ssl.settings.model_copy(update={"kafka_ssl_ca_file": pki.path("other-ca.pem"),
                                                  "kafka_sasl_password": None})
    # The password comes from a file, as a container secret does.
    worker = WorkerProcess(broken, ("state",), {"SUSPENSIONS_KAFKA_SASL_PASSWORD_FILE": str(password_file),
                                                "SUSPENSIONS_RETRY_MAX_BACKOFF_S": "1"},
                           tmp_path / "state.log").start()
    try:
        def not_ready_because() -> str | None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{worker.http_port}/readyz", timeout=2):
                    return None
            except urllib.error.HTTPError as error:
                body = json.loads(error.read())
                return " ".join(body["workers"]["state"]["not_ready_because"])
            except OSError:
                return None

        def cause_named() -> str | None:
            # Until the first attempt fails, /readyz can only say "not connected"; wait for the cause.
            reason = not_ready_because()
            return reason if reason and "TLS verification failed" in reason else None

        reason = await wait_until(lambda: asyncio.to_thread(cause_named), 30, "/readyz naming the TLS cause")
        assert f"broker 127.0.0.1:{sasl_ssl.proxy.port}" in reason
        started = time.monotonic()
        await wait_until(lambda: asyncio.to_thread(
            lambda: (tmp_path / "state.log").read_text().count("broker unavailable, retrying") >= 4), 30,
            "a few retries")
        metrics = await asyncio.to_thread(
            lambda: urllib.request.urlopen(f"http://127.0.0.1:{worker.http_port}/metrics", timeout=2).read().decode())
    finally:
        worker.stop()
    log = (tmp_path / "state.log").read_text()
    retries = [json.loads(line) for line in log.splitlines() if "broker unavailable, retrying" in line]
    # One line per backoff step, each with the cause, never a flood: the steps double up to 1 s.
    assert all("TLS verification failed" in line["cause"] for line in retries)
    assert len(retries) <= 4 + (time.monotonic() - started) / 1 + 2
    assert [line["backoff_s"] for line in retries[:3]] == [0.2, 0.4, 0.8]
    assert PASSWORD not in log and PASSWORD not in metrics
    help_text = await asyncio.to_thread(run_cli, broken, "run", "--help")
    assert PASSWORD not in help_text.stdout


async def test_secrets_come_from_files_and_never_show(settings: Settings, tmp_path: Path,
                                                      password_file: Path) -> None:
    """A setting that cannot work is refused in one line naming the variable, never its value."""
    env = {"SUSPENSIONS_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "SUSPENSIONS_KAFKA_SASL_USERNAME": "svc",
           "SUSPENSIONS_KAFKA_SASL_PASSWORD_FILE": str(tmp_path / "missing")}
    missing = await asyncio.to_thread(run_cli_env, settings, env, "lag")
    assert missing.returncode == 2
    assert "SUSPENSIONS_KAFKA_SASL_PASSWORD_FILE: cannot read" in missing.stderr
    env["SUSPENSIONS_KAFKA_SASL_PASSWORD_FILE"] = str(password_file)
    env["SUSPENSIONS_KAFKA_SSL_CERT_FILE"] = str(tmp_path / "client.pem")  # a certificate without its key
    incomplete = await asyncio.to_thread(run_cli_env, settings, env, "lag")
    assert incomplete.returncode == 2 and "go together" in incomplete.stderr
    assert PASSWORD not in incomplete.stdout + incomplete.stderr


@pytest_asyncio.fixture(scope="module")
async def tls_postgres(settings: Settings, pki: Pki) -> AsyncIterator[tuple[Settings, LocalPostgres]]:
    """A PostgreSQL over TLS and a broker of its own: the session's workers must not take its commands."""
    from suspensions.local.broker import LocalBroker

    server = pki.ca.issue_cert("127.0.0.1", "localhost")
    postgres = LocalPostgres(tls=(b"".join(pem.bytes() for pem in server.cert_chain_pems),
                                  server.private_key_pem.bytes()))
    await asyncio.to_thread(postgres.start)
    broker = LocalBroker().start()
    try:
        url = f"{postgres.url}?sslmode=verify-full&sslrootcert={pki.path('ca.pem')}"
        verified = settings.model_copy(update={"database_url": url,
                                               "kafka_bootstrap_servers": broker.bootstrap_servers})
        await create_topics(verified)
        yield verified, postgres
    finally:
        broker.stop()
        await asyncio.to_thread(postgres.stop)


async def test_postgresql_over_tls_for_migrations_cli_and_workers(tls_postgres: tuple[Settings, LocalPostgres],
                                                                  pki: Pki, tmp_path: Path) -> None:
    verified, _ = tls_postgres
    migrated = await asyncio.to_thread(run_cli, verified, "db", "migrate")
    assert migrated.returncode == 0, migrated.stderr
    worker = WorkerProcess(verified, ("state",), log_path=tmp_path / "state.log").start()
    try:
        await worker.wait_ready()
        customer, space = uid("cust"), uid("space")
        suspended = await asyncio.to_thread(run_cli, verified, "suspend", customer, "--space", space,
                                            "--actor", "admin:ops", "--wait", "--json")
        assert suspended.returncode == 0 and json.loads(suspended.stdout)["outcome"] == "changed", suspended.stderr
        status = await asyncio.to_thread(run_cli, verified, "status", customer, "--json")
        assert json.loads(status.stdout)["suspended"] is True
    finally:
        worker.stop()
    doctor = json.loads((await asyncio.to_thread(run_cli, verified, "doctor", "--json")).stdout)
    database = next(check for check in doctor["checks"] if check["name"].startswith("PostgreSQL"))
    assert database["status"] == "OK" and database["detail"].endswith(", TLS")

    wrong_ca = verified.database_url.replace(str(pki.path("ca.pem")), str(pki.path("other-ca.pem")))
    refused = await asyncio.to_thread(run_cli, verified.model_copy(update={"database_url": wrong_ca}),
                                      "status", customer)
    assert refused.returncode == 1 and "certificate verify failed" in refused.stderr, refused.stderr


async def test_the_compose_variants_certificates_work_with_the_service_settings(settings: Settings,
                                                                               tmp_path: Path) -> None:
    """ops/tls/make-certs.sh (the SASL_SSL compose variant's one-shot) makes a CA, a broker key store and a
    client certificate that the service's TLS settings accept, hostname check and mutual TLS included."""
    out = tmp_path / "tls"
    made = await asyncio.to_thread(subprocess.run, ["sh", str(ROOT / "ops" / "tls" / "make-certs.sh"), str(out)],
                                   capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(out / "kafka.keystore.pem")
    server.load_verify_locations(out / "ca.pem")
    server.verify_mode = ssl.CERT_REQUIRED
    proxy = BrokerProxy(0, ssl_context=server)
    async for secured in _secured_stack(settings, proxy, kafka_security_protocol="SSL",
                                        kafka_ssl_ca_file=out / "ca.pem", kafka_ssl_cert_file=out / "client.pem",
                                        kafka_ssl_key_file=out / "client.key", kafka_ssl_check_hostname=True):
        assert (await check_broker(secured.settings)).ok
        assert len(await _admin_topics(secured.settings)) >= 12
        assert proxy.accepted > 0


async def _admin_topics(settings: Settings) -> list[str]:
    admin = make_admin(settings)
    await start_client(admin, settings)
    try:
        return [name for name in await admin.list_topics() if not name.startswith("__")]
    finally:
        await admin.close()
