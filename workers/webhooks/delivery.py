"""One attempt of one delivery over HTTP, and the pure rules of what follows it (retry when, give up,
disable the endpoint)."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit

import aiohttp

from models.version import SERVICE_VERSION
from workers.webhooks.guard import DestinationRefused, PublicOnlyResolver, check_host_literal
from workers.webhooks.signing import signature_header

RESPONSE_KEPT_BYTES = 1024


def user_agent() -> str:
    """The product token receivers were told of (docs/webhooks.md), then the service's own: which release
    sent a delivery, the same token as every other outgoing request of the service."""
    return f"suspensions-webhooks/{SERVICE_VERSION} suspensions/{SERVICE_VERSION}"


@dataclass(frozen=True)
class Result:
    """What one attempt gave: a status code and the answer's start, or an error (no answer)."""

    status_code: int | None
    latency_s: float
    error: str | None = None
    response: str | None = None
    retry_after_s: float | None = None
    refused: bool = False  # the destination rules refused it: nothing was sent

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300

    @property
    def outcome(self) -> str:
        """The attempt's outcome as the metrics label it."""
        if self.refused:
            return "refused"
        if self.status_code is None:
            return "timeout" if self.error == "timeout" else "connection_error"
        if self.delivered:
            return "delivered"
        return "gone" if self.status_code == 410 else "http_error"


def retry_after_seconds(value: str | None, now: datetime) -> float | None:
    """``Retry-After``: seconds, or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


@dataclass(frozen=True)
class Schedule:
    """The backoff of failed attempts, and how long a delivery and an endpoint may keep failing."""

    initial_s: float
    max_s: float
    retry_for: timedelta
    disable_after: timedelta

    def next_attempt(self, attempt: int, retry_after_s: float | None, created_at: datetime,
                     now: datetime, jitter: float | None = None) -> datetime | None:
        """When to try again after failed attempt number ``attempt`` (1 for the first), or None: give up.

        Exponential backoff with jitter (between half and all of the step); a ``Retry-After`` longer than
        that is honoured as it is."""
        step = min(self.max_s, self.initial_s * 2 ** (attempt - 1))
        delay = step * (0.5 + 0.5 * (random.random() if jitter is None else jitter))  # noqa: S311 - not a secret
        if retry_after_s is not None:
            delay = max(delay, retry_after_s)
        at = now + timedelta(seconds=delay)
        return None if at > created_at + self.retry_for else at

    def disable_reason(self, result: Result, failing_since: datetime | None, now: datetime) -> str | None:
        """Why the endpoint is disabled after this attempt, or None."""
        if result.status_code == 410:
            return "410 Gone: the endpoint asked for no more deliveries"
        if not result.delivered and failing_since is not None and now - failing_since >= self.disable_after:
            return f"failing since {failing_since.isoformat()} (more than {self.disable_after})"
        return None


class Sender:
    """The HTTP client of one worker: redirects not followed, a timeout per attempt, destinations checked
    (guard.py) unless private ones are allowed."""

    def __init__(self, timeout_s: float, allow_private: bool, max_connections: int) -> None:
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._allow_private = allow_private
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None
        self._user_agent = user_agent()

    async def __aenter__(self) -> Sender:
        connector = aiohttp.TCPConnector(
            limit=self._max_connections, use_dns_cache=self._allow_private,
            resolver=None if self._allow_private else PublicOnlyResolver())
        self._session = aiohttp.ClientSession(connector=connector, timeout=self._timeout,
                                              headers={"user-agent": self._user_agent})
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._session is not None:
            await self._session.close()

    async def send(self, url: str, message_id: str, body: bytes, secrets_in_use: list[str]) -> Result:
        assert self._session is not None, "use the sender as an async context manager"
        started = time.perf_counter()
        at = datetime.now(UTC)
        try:
            if not self._allow_private:
                parts = urlsplit(url)
                if parts.scheme != "https":
                    raise DestinationRefused("refused: only https URLs")
                check_host_literal(parts.hostname or "")
            headers = {"content-type": "application/json", "webhook-id": message_id,
                       "webhook-timestamp": str(int(at.timestamp())),
                       "webhook-signature": signature_header(secrets_in_use, message_id, at, body)}
            async with self._session.post(url, data=body, headers=headers, allow_redirects=False) as response:
                start = await response.content.read(RESPONSE_KEPT_BYTES)
                return Result(response.status, time.perf_counter() - started,
                              error=None if 200 <= response.status < 300 else f"HTTP {response.status}",
                              response=start.decode("utf-8", errors="replace"),
                              retry_after_s=retry_after_seconds(response.headers.get("retry-after"), at))
        except DestinationRefused as refused:
            return Result(None, time.perf_counter() - started, error=str(refused), refused=True)
        except TimeoutError:
            return Result(None, time.perf_counter() - started, error="timeout")
        except (aiohttp.ClientError, OSError, ValueError) as error:
            cause = error.__cause__ if isinstance(error.__cause__, DestinationRefused) else error
            return Result(None, time.perf_counter() - started, error=f"{type(cause).__name__}: {cause}"[:1000],
                          refused=isinstance(cause, DestinationRefused))
