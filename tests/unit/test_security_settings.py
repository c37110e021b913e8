"""Every Kafka client, faust's included, is built with the same security settings; secrets stay secret."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth
from pydantic import SecretStr

from workers.runtime.config import Settings
from workers.runtime.kafka import make_admin, make_consumer, make_producer
from workers.triggers.lean_faust import faust_app

PASSWORD = "scram-secret-value"


def sasl_settings(**changes: object) -> Settings:
    return Settings(kafka_security_protocol="SASL_SSL", kafka_sasl_mechanism="SCRAM-SHA-512",
                    kafka_sasl_username="svc", kafka_sasl_password=SecretStr(PASSWORD), **changes)


async def test_every_aiokafka_client_gets_the_mechanism_and_credentials() -> None:
    settings = sasl_settings(kafka_ssl_check_hostname=False)
    producer, consumer, admin = make_producer(settings), make_consumer(settings, "g"), make_admin(settings)
    for client in (producer.client, consumer._client, admin._client):
        assert client._security_protocol == "SASL_SSL"
        assert client._sasl_mechanism == "SCRAM-SHA-512"
        assert (client._sasl_plain_username, client._sasl_plain_password) == ("svc", PASSWORD)
        assert isinstance(client._ssl_context, ssl.SSLContext)
        assert client._ssl_context.check_hostname is False
        assert client._ssl_context.verify_mode is ssl.CERT_REQUIRED  # hostname off, verification still on


def test_faust_gets_the_same_through_its_credentials() -> None:
    app = faust_app(sasl_settings(), "g")
    auth = credentials_to_aiokafka_auth(app.conf.broker_credentials)
    assert auth["security_protocol"] == "SASL_SSL" and auth["sasl_mechanism"] == "SCRAM-SHA-512"
    assert (auth["sasl_plain_username"], auth["sasl_plain_password"]) == ("svc", PASSWORD)
    assert isinstance(auth["ssl_context"], ssl.SSLContext)
    assert PASSWORD not in repr(app.conf.broker_credentials)


def test_tls_only_gives_faust_ssl_credentials_and_plaintext_none() -> None:
    tls = faust_app(Settings(kafka_security_protocol="SSL"), "g")
    assert credentials_to_aiokafka_auth(tls.conf.broker_credentials)["security_protocol"] == "SSL"
    assert faust_app(Settings(), "g").conf.broker_credentials is None


def test_secrets_from_files_and_never_in_the_settings_text(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "password").write_text(PASSWORD + "\n")
    (tmp_path / "db").write_text("db-secret\n")
    monkeypatch.setenv("SUSPENSIONS_KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    monkeypatch.setenv("SUSPENSIONS_KAFKA_SASL_USERNAME", "svc")
    monkeypatch.setenv("SUSPENSIONS_KAFKA_SASL_PASSWORD_FILE", str(tmp_path / "password"))
    monkeypatch.setenv("SUSPENSIONS_DATABASE_PASSWORD_FILE", str(tmp_path / "db"))
    settings = Settings()
    assert settings.kafka_sasl_password is not None
    assert settings.kafka_sasl_password.get_secret_value() == PASSWORD
    assert settings.database_connect_args()["password"] == "db-secret"
    assert PASSWORD not in repr(settings) and PASSWORD not in str(settings) and "db-secret" not in repr(settings)
    monkeypatch.setenv("SUSPENSIONS_KAFKA_SASL_PASSWORD", "given-directly")  # the variable wins over the file
    assert Settings().kafka_sasl_password == SecretStr("given-directly")


def test_a_password_in_the_database_url_is_redacted() -> None:
    url = "postgresql://app:hunter2@db.internal:5432/suspensions?sslmode=verify-full"
    settings = Settings(database_url=url)
    assert settings.database_location == "postgresql://app:***@db.internal:5432/suspensions?sslmode=verify-full"
    # Connecting still uses it: what the pools and connections are given is the URL as configured, password in.
    assert settings.database_login_args() == {"dsn": url}
    for text in (repr(settings), str(settings)):
        assert "hunter2" not in text and "postgresql://app:***@db.internal:5432/suspensions" in text


def test_passwords_in_the_urls_options_are_redacted_too() -> None:
    from workers.runtime.config import redact_url

    shown = redact_url("postgresql://app:s3cret@db:5432/suspensions?sslmode=verify-full&password=p4ss&sslpassword=k3y")
    assert "s3cret" not in shown and "p4ss" not in shown and "k3y" not in shown
    assert shown == "postgresql://app:***@db:5432/suspensions?sslmode=verify-full&password=***&sslpassword=***"
