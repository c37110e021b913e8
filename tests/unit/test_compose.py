"""No Docker engine runs here: the compose file is held correct by reading it."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml

from workers.registry import WORKER_NAMES
from workers.runtime.config import FILE_SETTINGS, Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
SETTINGS_FIELDS = {f"SUSPENSIONS_{name.upper()}" for name in Settings.model_fields}
FILE_VARIABLES = {f"SUSPENSIONS_{name.upper()}_FILE" for name in FILE_SETTINGS}


def test_every_service_is_there() -> None:
    assert {"kafka", "postgres", "setup", "prometheus", *WORKER_NAMES} <= set(SERVICES)


def test_kafka_runs_in_kraft_mode() -> None:
    env = SERVICES["kafka"]["environment"]
    assert "controller" in env["KAFKA_PROCESS_ROLES"] and "broker" in env["KAFKA_PROCESS_ROLES"]
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"].endswith("@kafka:9093")
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"  # topics come from `suspensions topics create`
    assert not any("zookeeper" in name for name in SERVICES)


@pytest.mark.parametrize("service", ["setup", *WORKER_NAMES])
def test_services_use_only_known_settings_with_production_values(service: str) -> None:
    env = SERVICES[service]["environment"]
    unknown = set(env) - SETTINGS_FIELDS - FILE_VARIABLES
    assert not unknown, f"{service} sets variables the code does not read: {unknown}"
    settings = Settings(**{key.removeprefix("SUSPENSIONS_").lower(): value for key, value in env.items()
                           if key not in FILE_VARIABLES})
    assert settings.kafka_enable_idempotence is True
    assert settings.kafka_session_timeout_ms >= 30_000
    host, port = settings.kafka_bootstrap_servers.split(":")
    assert host == "kafka" and f"PLAINTEXT://kafka:{port}" in SERVICES["kafka"]["environment"][
        "KAFKA_ADVERTISED_LISTENERS"]
    url = urlparse(settings.database_url)
    postgres_env = SERVICES["postgres"]["environment"]
    assert url.scheme == "postgresql" and url.hostname == "postgres"
    assert (url.username, url.password, url.path.lstrip("/")) == (
        postgres_env["POSTGRES_USER"], None, postgres_env["POSTGRES_DB"])
    # The password: the very file the postgres image was given, mounted as the same compose secret.
    assert env["SUSPENSIONS_DATABASE_PASSWORD_FILE"] == postgres_env["POSTGRES_PASSWORD_FILE"]


@pytest.mark.parametrize("worker", WORKER_NAMES)
def test_each_worker_runs_its_worker_after_setup(worker: str) -> None:
    service = SERVICES[worker]
    assert service["command"] == ["run", worker]
    assert service["depends_on"]["setup"]["condition"] == "service_completed_successfully"
    assert "/readyz" in " ".join(service["healthcheck"]["test"])


def test_setup_migrates_and_creates_topics_once_services_are_healthy() -> None:
    setup = SERVICES["setup"]
    command = " ".join(setup["entrypoint"])
    assert "suspensions db migrate" in command and "suspensions topics create" in command
    assert {dep["condition"] for dep in setup["depends_on"].values()} == {"service_healthy"}


def test_prometheus_scrapes_every_worker_on_its_http_port() -> None:
    volume = SERVICES["prometheus"]["volumes"][0].split(":")[0]
    config = yaml.safe_load((ROOT / volume).read_text())
    targets = config["scrape_configs"][0]["static_configs"][0]["targets"]
    ports = {SERVICES[w]["environment"]["SUSPENSIONS_HTTP_PORT"] for w in WORKER_NAMES}
    assert sorted(targets) == sorted(f"{w}:{port}" for w in WORKER_NAMES for port in ports)


def test_image_installs_every_package_the_console_script_needs() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    for package in ("suspensions", "models", "topics", "workers"):
        assert f"COPY {package} ./{package}" in dockerfile


SECURED = yaml.safe_load((ROOT / "docker-compose.sasl-ssl.yml").read_text())["services"]


SECURED_FILE = yaml.safe_load((ROOT / "docker-compose.sasl-ssl.yml").read_text())


def _merged_env(service: str) -> dict[str, str]:
    """What `docker compose -f docker-compose.yml -f docker-compose.sasl-ssl.yml` gives a service."""
    return {**SERVICES.get(service, {}).get("environment", {}), **SECURED.get(service, {}).get("environment", {})}


def _merged(service: str) -> dict[str, Any]:
    """A service of the two files together: mappings merged, `ports` and `secrets` joined (compose's rules)."""
    base, extra = SERVICES.get(service, {}), SECURED.get(service, {})
    return {**base, **extra, "environment": _merged_env(service),
            "ports": [*base.get("ports", []), *extra.get("ports", [])],
            "secrets": [*base.get("secrets", []), *extra.get("secrets", [])]}


@pytest.mark.parametrize("service", ["setup", *WORKER_NAMES])
def test_the_sasl_ssl_variant_connects_every_service_over_sasl_ssl(service: str) -> None:
    env = _merged_env(service)
    assert not set(env) - SETTINGS_FIELDS - FILE_VARIABLES
    assert env["SUSPENSIONS_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    assert "SUSPENSIONS_KAFKA_SASL_PASSWORD" not in env  # the secret comes from a file, never the compose file
    assert env["SUSPENSIONS_KAFKA_SASL_PASSWORD_FILE"] == "/run/secrets/kafka_sasl_password"
    assert "kafka_sasl_password" in _merged(service)["secrets"]
    mounts = {volume.split(":")[1] for volume in SECURED[service]["volumes"]}
    assert env["SUSPENSIONS_KAFKA_SSL_CA_FILE"].rsplit("/", 1)[0] in mounts
    host, port = env["SUSPENSIONS_KAFKA_BOOTSTRAP_SERVERS"].split(":")
    kafka = _merged_env("kafka")
    assert f"SASL_SSL://{host}:{port}" in kafka["KAFKA_ADVERTISED_LISTENERS"]
    assert env["SUSPENSIONS_KAFKA_SASL_MECHANISM"] in kafka["KAFKA_SASL_ENABLED_MECHANISMS"].split(",")
    jaas = kafka["KAFKA_LISTENER_NAME_SASL__SSL_PLAIN_SASL_JAAS_CONFIG"]
    assert f'user_{env["SUSPENSIONS_KAFKA_SASL_USERNAME"]}="$${{file:/tls/users.properties:' in jaas


def test_the_certificates_are_made_by_a_one_shot_service_before_the_broker() -> None:
    assert "make-certs.sh /tls" in " ".join(SECURED["certs"]["entrypoint"])
    # The broker's user file is made from the same secret the service reads.
    assert SECURED["certs"]["secrets"] == ["kafka_sasl_password"]
    assert SECURED["certs"]["environment"]["KAFKA_SASL_PASSWORD_FILE"] == "/run/secrets/kafka_sasl_password"
    assert SECURED["kafka"]["depends_on"]["certs"]["condition"] == "service_completed_successfully"
    kafka = _merged_env("kafka")
    assert kafka["KAFKA_SSL_KEYSTORE_LOCATION"] == "/tls/kafka.keystore.pem"
    assert kafka["KAFKA_SSL_TRUSTSTORE_LOCATION"] == "/tls/ca.pem"


def test_the_image_runs_as_a_user_that_is_not_root() -> None:
    users = [line.split()[1] for line in (ROOT / "Dockerfile").read_text().splitlines() if line.startswith("USER ")]
    assert users and users[-1].split(":")[0] not in ("root", "0")


def test_the_api_runs_with_the_workers_settings_and_is_scraped() -> None:
    api = SERVICES["api"]
    assert api["command"] == ["run", "api"]
    env = api["environment"]
    assert not set(env) - SETTINGS_FIELDS - FILE_VARIABLES
    assert env["SUSPENSIONS_API_HOST"] == "0.0.0.0" and f"{env['SUSPENSIONS_API_PORT']}:" in api["ports"][0]
    # Its /readyz and /metrics are on the process's internal port, as the workers' are.
    assert f"127.0.0.1:{env['SUSPENSIONS_HTTP_PORT']}/readyz" in " ".join(api["healthcheck"]["test"])
    config = yaml.safe_load((ROOT / "ops" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job["static_configs"][0]["targets"] for job in config["scrape_configs"]}
    assert f"api:{env['SUSPENSIONS_HTTP_PORT']}" in jobs["suspensions-api"]
    assert _merged_env("api")["SUSPENSIONS_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"


# --- issue 21: what the stacks expose, and where their secrets come from ------------------------

STACKS = {"docker-compose.yml": lambda service: SERVICES.get(service, {}),
          "docker-compose.yml + docker-compose.sasl-ssl.yml": _merged}
SERVICE_NAMES = sorted(set(SERVICES) | set(SECURED))  # certs is the variant's only: empty in the base stack


@pytest.mark.parametrize("stack", list(STACKS))
def test_only_the_api_and_prometheus_are_published_to_the_host(stack: str) -> None:
    published = {name: STACKS[stack](name).get("ports") for name in SERVICE_NAMES if STACKS[stack](name).get("ports")}
    assert "postgres" not in published and "kafka" not in published, published
    assert set(published) <= {"api", "prometheus"}, published
    # Prometheus (no authentication of its own) listens on the host's loopback only.
    assert all(str(port).startswith("127.0.0.1:") for port in published.get("prometheus", []))


@pytest.mark.parametrize("stack", list(STACKS))
def test_no_secret_is_written_in_a_compose_file(stack: str) -> None:
    for name in SERVICE_NAMES:
        env = STACKS[stack](name).get("environment", {})
        for key, value in env.items():
            if any(word in key for word in ("PASSWORD", "SECRET", "TOKEN")) and not key.endswith("_FILE"):
                raise AssertionError(f"{name} sets {key} in the compose file")
            if key.endswith("DATABASE_URL"):
                assert urlparse(value).password is None, f"{name}: a password in {key}"
    for path in ("docker-compose.yml", "docker-compose.sasl-ssl.yml"):
        assert "suspensions:suspensions@" not in (ROOT / path).read_text()


@pytest.mark.parametrize("stack", list(STACKS))
def test_every_secret_is_a_compose_secret_file_read_through_its_file_variable(stack: str) -> None:
    declared = {**COMPOSE.get("secrets", {}), **(SECURED_FILE.get("secrets", {}) if "+" in stack else {})}
    assert declared, "no compose secrets"
    for secret in declared.values():
        assert set(secret) == {"file"} and secret["file"].startswith("./ops/secrets/"), secret
    readers = 0
    for name in SERVICE_NAMES:
        service = STACKS[stack](name)
        for key, value in service.get("environment", {}).items():
            if key.endswith("_FILE") and str(value).startswith("/run/secrets/"):
                secret = str(value).removeprefix("/run/secrets/")
                assert secret in declared and secret in service["secrets"], f"{name}: {key} has no secret {secret}"
                readers += 1
    assert readers >= 6  # postgres, setup, the workers and the API at least
    postgres = STACKS[stack]("postgres")
    assert "POSTGRES_PASSWORD" not in postgres["environment"]
    assert postgres["environment"]["POSTGRES_PASSWORD_FILE"] == "/run/secrets/postgres_password"
    for name in ("setup", "api", *WORKER_NAMES):
        assert STACKS[stack](name)["environment"]["SUSPENSIONS_DATABASE_PASSWORD_FILE"] == (
            "/run/secrets/postgres_password")


def test_the_secret_files_are_made_by_the_script_and_never_committed(tmp_path: Path) -> None:
    out = tmp_path / "secrets"
    made = subprocess.run([str(ROOT / "scripts" / "make-secrets"), str(out)], capture_output=True, text=True,
                          timeout=30)
    assert made.returncode == 0, made.stderr
    names = set(COMPOSE["secrets"]) | set(SECURED_FILE["secrets"])
    values = {name: (out / name).read_text() for name in names}
    assert all(len(value) >= 32 for value in values.values()) and len(set(values.values())) == len(names)
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o700
    again = subprocess.run([str(ROOT / "scripts" / "make-secrets"), str(out)], capture_output=True, text=True,
                           timeout=30)
    assert again.returncode == 0 and {name: (out / name).read_text() for name in names} == values  # kept
    for name in names:
        ignored = subprocess.run(["git", "check-ignore", "-q", f"ops/secrets/{name}"], cwd=ROOT)
        assert ignored.returncode == 0, f"ops/secrets/{name} is not ignored by git"
    assert "scripts/make-secrets" in (ROOT / "ops" / "secrets" / "README.md").read_text()
