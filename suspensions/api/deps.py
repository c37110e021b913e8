"""What every API route depends on: the service layer, the bearer token's principal, the error answers.

A route takes its principal from ``Who`` and acts through ``Ops`` (``service.Operations``), never
from what the request claims nor on the pool itself; ``ERRORS`` are the answers every route may give
besides its own, documented once.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request

from suspensions.access import Principal, Role
from suspensions.api.service import Operations
from suspensions.api.throttle import AuthThrottle

ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "No token, or an unknown or revoked one"},
    403: {"description": "The token's role may not do this"},
    404: {"description": "No such customer here (another space's answers the same)"},
    503: {"description": "Busy (no database connection came free in time) or unavailable (the database or the "
                         "broker did not answer in time); retry after `Retry-After` seconds"},
}


def operations(request: Request) -> Operations:
    ops: Operations = request.app.state.operations
    return ops


def presented_token(request: Request) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return (token.strip() or None) if scheme.lower() == "bearer" else None


async def token_principal(request: Request, ops: Operations, token: str) -> Principal | None:
    """The token's principal, or None (a failure, counted and throttled per client address); 429 for an
    address past its failures, before the token is looked up (the attempt counts until it succeeds)."""
    throttle: AuthThrottle = request.app.state.throttle
    with throttle.attempt(request) as attempt:
        principal = await ops.principal_for_token(token)
        if principal is None:
            request.app.state.metrics.auth_failures.labels(reason="unknown or revoked").inc()
            attempt.failed("unknown or revoked token", token)
        else:
            attempt.succeeded()
    return principal


async def bearer(request: Request, ops: Annotated[Operations, Depends(operations)]) -> Principal:
    """The principal of `Authorization: Bearer <token>`; 401 otherwise (counted, never logged with the token)."""
    token = presented_token(request)
    if token is None:
        request.app.state.metrics.auth_failures.labels(reason="missing").inc()
        raise HTTPException(401, "a bearer token is required", headers={"WWW-Authenticate": "Bearer"})
    principal = await token_principal(request, ops, token)
    if principal is None:
        raise HTTPException(401, "unknown or revoked token", headers={"WWW-Authenticate": "Bearer"})
    return principal


async def internal(request: Request, ops: Annotated[Operations, Depends(operations)]) -> None:
    """/metrics and /readyz belong on the internal port (SUSPENSIONS_HTTP_PORT); here they answer only an
    admin token, and anyone else as if they did not exist (404)."""
    token = presented_token(request)
    principal = await token_principal(request, ops, token) if token is not None else None
    if principal is None or not principal.may(Role.ADMIN):
        raise HTTPException(404, "Not Found")


Who = Annotated[Principal, Depends(bearer)]
Ops = Annotated[Operations, Depends(operations)]
