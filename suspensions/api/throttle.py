"""Failed authentications, throttled per client address (bearer tokens, console sign-in, session cookies).

Tokens are 256 random bits, so guessing one is hopeless; the throttle is what makes that true in
practice (ASVS 2.2.1) and keeps a guessing client from costing a PostgreSQL lookup per try. Past
``SUSPENSIONS_API_AUTH_FAILURES_PER_MINUTE`` failures within a minute, an address's authentications
answer 429 with ``Retry-After`` (seconds until its oldest failure leaves the window) without being
checked. Each address counts alone: nobody's success, or failures, changes another address's count,
and a success does not wipe the address's own count either (a valid token must not buy more guesses).

An attempt is counted as a failure before its credential is looked up, and uncounted once it
succeeds (or ends without an answer, its lookup having raised): so guesses sent all at once cannot
all pass the check before the first of them fails. Authentications still in flight count against
their address until they succeed.

The state is in-process, one object per app (``app.state.throttle``): with several API processes
behind a load balancer each allows its own share, which still bounds guessing. Memory is bounded: at
most ``max_addresses`` addresses (the least recently failing one is forgotten first), plus those with
an authentication in flight, each keeping at most ``per_minute`` timestamps.

Every failure is logged once, with the address, the reason and at most the first 4 characters of what
was presented (the ``sus_`` prefix of a real token): never a token, never a cookie.
"""

from __future__ import annotations

import logging
import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable

from fastapi import HTTPException, Request

log = logging.getLogger(__name__)

WINDOW_S = 60.0
MAX_ADDRESSES = 10_000
SHOWN_CHARACTERS = 4


class Throttled(HTTPException):
    def __init__(self, retry_after_s: int) -> None:
        super().__init__(429, "too many failed authentications from this address; retry later",
                         headers={"Retry-After": str(retry_after_s)})


def client_address(request: Request) -> str:
    """The client's address as uvicorn gives it (a trusted proxy's ``X-Forwarded-For`` applied)."""
    return request.client.host if request.client else "unknown"


class Attempt:
    """One authentication, counted as a failure from the start (``AuthThrottle.attempt``) until it
    succeeds. Used as a context manager, an exception before it is settled uncounts it too: a lookup
    that could not be made is no failed authentication."""

    def __init__(self, throttle: AuthThrottle, request: Request, address: str, at: float) -> None:
        self._throttle, self._request, self._address, self._at = throttle, request, address, at
        self._settled = False

    def succeeded(self) -> None:
        self._settled = True
        self._throttle._uncount(self._address, self._at)

    def failed(self, reason: str, presented: str | None) -> None:
        """Logged once (the count was taken when the attempt began)."""
        self._settled = True
        log.warning("authentication failed", extra={
            "client": self._address, "reason": reason, "path": self._request.url.path,
            "credential_start": (presented or "")[:SHOWN_CHARACTERS]})
        self._throttle._bound()

    def __enter__(self) -> Attempt:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: object) -> None:
        if kind is not None and not self._settled:  # no answer either way: not a failure
            self._settled = True
            self._throttle._uncount(self._address, self._at)


class AuthThrottle:
    def __init__(self, per_minute: int, *, max_addresses: int = MAX_ADDRESSES, window_s: float = WINDOW_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.per_minute, self.max_addresses, self.window_s, self._clock = per_minute, max_addresses, window_s, clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def retry_after(self, address: str) -> int | None:
        """Seconds this address must wait before its next authentication is checked, or None."""
        failures = self._failures.get(address)
        if failures is None or len(failures) < self.per_minute:
            return None
        wait = failures[0] + self.window_s - self._clock()
        if wait <= 0:
            return None
        return max(1, math.ceil(wait))

    def attempt(self, request: Request) -> Attempt:
        """Before any credential is looked at: 429 for an address past its failures; otherwise the attempt,
        already counted as a failure (checked and counted with no await between: one step)."""
        address = client_address(request)
        wait = self.retry_after(address)
        if wait is not None:
            raise Throttled(wait)
        at = self._clock()
        failures = self._failures.pop(address, None)
        if failures is None:
            failures = deque(maxlen=self.per_minute)
        failures.append(at)  # past the limit only an expired failure is pushed out
        self._failures[address] = failures  # now the most recently failing
        return Attempt(self, request, address, at)

    def _uncount(self, address: str, at: float) -> None:
        failures = self._failures.get(address)
        if failures is None or at not in failures:
            return  # forgotten meanwhile (expired and pushed out, or the address evicted)
        failures.remove(at)
        if not failures:
            del self._failures[address]

    def _bound(self) -> None:
        """At a failure, never at an attempt: a success (its address's attempt in flight meanwhile) must
        not push another address's failures out."""
        while len(self._failures) > self.max_addresses:
            self._failures.popitem(last=False)

    def __len__(self) -> int:
        return len(self._failures)
