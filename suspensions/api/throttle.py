"""Failed authentications, throttled per client address (bearer tokens, console sign-in, session cookies).

Tokens are 256 random bits, so guessing one is hopeless; the throttle is what makes that true in
practice (ASVS 2.2.1) and keeps a guessing client from costing a PostgreSQL lookup per try. Past
``SUSPENSIONS_API_AUTH_FAILURES_PER_MINUTE`` failures within a minute, an address's authentications
answer 429 with ``Retry-After`` (seconds until its oldest failure leaves the window) without being
checked. Each address counts alone: nobody's success, or failures, changes another address's count,
and a success does not wipe the address's own count either (a valid token must not buy more guesses).

The state is in-process, one object per app (``app.state.throttle``): with several API processes
behind a load balancer each allows its own share, which still bounds guessing. Memory is bounded: at
most ``max_addresses`` addresses (the least recently failing one is forgotten first), each keeping at
most ``per_minute`` timestamps.

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

    def check(self, request: Request) -> None:
        """Before any credential is looked at: 429 for an address past its failures."""
        wait = self.retry_after(client_address(request))
        if wait is not None:
            raise Throttled(wait)

    def failed(self, request: Request, reason: str, presented: str | None) -> None:
        address = client_address(request)
        log.warning("authentication failed", extra={
            "client": address, "reason": reason, "path": request.url.path,
            "credential_start": (presented or "")[:SHOWN_CHARACTERS]})
        failures = self._failures.pop(address, None)
        if failures is None:
            failures = deque(maxlen=self.per_minute)
        failures.append(self._clock())
        self._failures[address] = failures  # now the most recently failing
        while len(self._failures) > self.max_addresses:
            self._failures.popitem(last=False)

    def __len__(self) -> int:
        return len(self._failures)
