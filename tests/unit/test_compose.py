"""No Docker engine runs here: the compose file is held correct by reading it."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml

from workers.registry import WORKER_NAMES
from workers.runtime.config import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
SETTINGS_FIELDS = {f"SUSPENSIONS_{name.upper()}" for name in Settings.model_fields}


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
    unknown = set(env) - SETTINGS_FIELDS
    assert not unknown, f"{service} sets variables the code does not read: {unknown}"
    settings = Settings(**{key.removeprefix("SUSPENSIONS_").lower(): value for key, value in env.items()})
    assert settings.kafka_enable_idempotence is True
    assert settings.kafka_session_timeout_ms >= 30_000
    host, port = settings.kafka_bootstrap_servers.split(":")
    assert host == "kafka" and f"PLAINTEXT://kafka:{port}" in SERVICES["kafka"]["environment"][
        "KAFKA_ADVERTISED_LISTENERS"]
    url = urlparse(settings.database_url)
    postgres_env = SERVICES["postgres"]["environment"]
    assert url.scheme == "postgresql" and url.hostname == "postgres"
    assert (url.username, url.password, url.path.lstrip("/")) == (
        postgres_env["POSTGRES_USER"], postgres_env["POSTGRES_PASSWORD"], postgres_env["POSTGRES_DB"])


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
