"""Issue 22: the pure parts of webhooks: backoff and giving up, Retry-After, which addresses are refused,
bodies, Standard Webhooks signatures."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
import pytest
from standardwebhooks.webhooks import Webhook

from workers.webhooks.delivery import Result, Schedule, retry_after_seconds
from workers.webhooks.guard import DestinationRefused, check_url, refused_address
from workers.webhooks.signing import event_body, new_secret, signature_header
from workers.webhooks.store import EndpointError, event_types

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
SCHEDULE = Schedule(initial_s=5, max_s=3600, retry_for=timedelta(days=3), disable_after=timedelta(days=5))


def test_backoff_doubles_with_jitter_up_to_the_maximum() -> None:
    delays = [(SCHEDULE.next_attempt(n, None, NOW, NOW, jitter=1.0) - NOW).total_seconds() for n in range(1, 12)]
    assert delays[:4] == [5, 10, 20, 40] and delays[-1] == 3600
    assert (SCHEDULE.next_attempt(3, None, NOW, NOW, jitter=0.0) - NOW).total_seconds() == 10  # half the step
    assert (SCHEDULE.next_attempt(1, 120, NOW, NOW, jitter=1.0) - NOW).total_seconds() == 120  # Retry-After


def test_a_delivery_is_given_up_after_the_retry_window() -> None:
    created = NOW - timedelta(days=3) + timedelta(seconds=30)
    assert SCHEDULE.next_attempt(20, None, created, NOW, jitter=0.0) is None
    assert SCHEDULE.next_attempt(1, None, created, NOW, jitter=0.0) is not None


def test_gone_and_days_of_failures_disable_the_endpoint() -> None:
    assert "410" in (SCHEDULE.disable_reason(Result(410, 0.1), None, NOW) or "")
    failing = Result(500, 0.1)
    assert SCHEDULE.disable_reason(failing, NOW - timedelta(days=4), NOW) is None
    assert SCHEDULE.disable_reason(failing, NOW - timedelta(days=5), NOW) is not None
    assert SCHEDULE.disable_reason(Result(200, 0.1), NOW - timedelta(days=6), NOW) is None


def test_retry_after_in_seconds_or_as_a_date() -> None:
    assert retry_after_seconds("30", NOW) == 30
    assert retry_after_seconds("Tue, 01 Dec 2026 12:01:00 GMT", NOW) == 60
    assert retry_after_seconds("soon", NOW) is None and retry_after_seconds(None, NOW) is None


@pytest.mark.parametrize("address", ["127.0.0.1", "10.0.0.1", "172.16.5.4", "192.168.1.1", "169.254.169.254",
                                     "169.254.1.1", "224.0.0.1", "0.0.0.0", "::1", "fe80::1", "fd00::1",
                                     "::ffff:10.0.0.1", "100.64.0.1", "fd00:ec2::254"])
def test_private_addresses_are_refused(address: str) -> None:
    assert refused_address(address) is not None


@pytest.mark.parametrize("address", ["93.184.215.14", "2606:4700::6810:84e5", "8.8.8.8"])
def test_public_addresses_pass(address: str) -> None:
    assert refused_address(address) is None


def test_urls_https_and_no_private_literal_unless_allowed() -> None:
    assert check_url("https://hooks.example.com/in", False) == "https://hooks.example.com/in"
    for url in ("http://hooks.example.com/in", "https://10.0.0.1/in", "ftp://x/", "https:///nohost", "nonsense",
                "https://[::1]/", "https://example.com/a b"):
        with pytest.raises(DestinationRefused):
            check_url(url, False)
    assert check_url("http://127.0.0.1:9000/in", True) == "http://127.0.0.1:9000/in"
    for url in ("https://user:secret@hooks.example.com/in", "https://token@hooks.example.com/in"):
        with pytest.raises(DestinationRefused, match="user name or password"):
            check_url(url, True)  # whatever the destination rules: a list must never show a secret


def test_event_types_named_with_or_without_the_prefix() -> None:
    assert event_types(["suspension.lifted", "suspended", "lifted"]) == ["lifted", "suspended"]
    with pytest.raises(EndpointError):
        event_types(["suspension.exploded"])


def test_body_carries_the_record_exactly_and_signatures_verify() -> None:
    record = b'{"event_id":"e1","type":"lifted","occurred_at":"2026-12-01T12:00:00.000Z","extra":[1, 2]}'
    body = event_body("lifted", "2026-12-01T12:00:00.000Z", record)
    assert orjson.loads(body) == {"type": "suspension.lifted", "timestamp": "2026-12-01T12:00:00.000Z",
                                  "data": orjson.loads(record)}
    assert body.endswith(record + b"}")
    old, new = new_secret(), new_secret()
    at = datetime.now(UTC)
    header = signature_header([new, old], "e1", at, body)
    headers = {"webhook-id": "e1", "webhook-timestamp": str(int(at.timestamp())), "webhook-signature": header}
    assert len(header.split(" ")) == 2 and all(part.startswith("v1,") for part in header.split(" "))
    for secret in (new, old):
        Webhook(secret).verify(body, headers)
