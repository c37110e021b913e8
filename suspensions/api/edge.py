"""The HTTP edge of the API process: what every request meets before the app, and every answer after it.

Two pure ASGI middlewares wrap the whole app (outside FastAPI's own error handling, so its 500s are
covered too), and one dependency guards every route:

- ``BodyLimit`` refuses a body larger than its route allows with 413, from ``Content-Length`` before a
  byte is read, or while the body streams in (it counts what ``receive`` hands over, never buffers it).
  A declared oversize never reaches the app, so costs no token lookup; nor does a streamed one on a
  JSON or form route (FastAPI reads those bodies before it authenticates). The bulk routes
  authenticate first and read after, so their stream is cut once it crosses the limit. A bulk CSV
  (the API's ``text/csv`` upload and the console's multipart form) may be larger
  (``SUSPENSIONS_API_MAX_BULK_BYTES``) and is held to a number of lines too
  (``SUSPENSIONS_API_MAX_BULK_LINES``); every other body (JSON, forms) to 1 MiB.
- ``SecurityHeaders`` puts the browser's defences on every answer: a Content-Security-Policy with no
  inline script, no framing, no sniffing, no referrer, no caching of anything but static files, and
  HSTS when the request came over HTTPS (directly, or ``X-Forwarded-Proto`` from a trusted proxy,
  which uvicorn's ``proxy_headers`` has already applied to the scope).
- ``refuse_control_characters``: an id with a C0 control character cannot exist (the contract refuses
  them, ``models.base.holds_control_character``, and PostgreSQL cannot even compare U+0000), so such a path
  answers exactly as an unknown customer (404) and such a query value is a 422, before any query runs.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from fastapi import HTTPException, Request
from fastapi.exceptions import RequestValidationError
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from models.base import holds_control_character
from suspensions.api.service import NotFound
from workers.runtime.config import Settings

BODY_MAX_BYTES = 1024 * 1024  # JSON and form bodies: no command or form comes near it
# The console's upload is multipart: its boundaries and part headers add lines around the CSV, which
# the handler then counts exactly (``count_lines``).
MULTIPART_LINE_SLACK = 32
BULK_PATHS = (re.compile(r"^/api/v1/spaces/[^/]+/bulk$"), re.compile(r"^/console/spaces/[^/]+/bulk$"))

CONTENT_SECURITY_POLICY = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                           "object-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
HSTS = "max-age=31536000"
STATIC_PREFIX = "/static/"



class BodyTooLarge(HTTPException):
    """413: raised from ``receive`` as the limit is crossed; FastAPI lets an HTTPException from body
    reading through, and ``BodyLimit`` answers it even if something in between swallowed it."""

    def __init__(self, message: str) -> None:
        super().__init__(413, message)


@dataclass(frozen=True)
class EdgeLimits:
    body_bytes: int = BODY_MAX_BYTES
    bulk_bytes: int = 20 * 1024 * 1024
    bulk_lines: int = 100_000

    @classmethod
    def from_settings(cls, settings: Settings) -> EdgeLimits:
        return cls(bulk_bytes=settings.api_max_bulk_bytes, bulk_lines=settings.api_max_bulk_lines)

    def of(self, method: str, path: str) -> tuple[int, int | None]:
        """(most bytes, most lines or None) for a request's body."""
        if method == "POST" and any(pattern.match(path) for pattern in BULK_PATHS):
            return self.bulk_bytes, self.bulk_lines + MULTIPART_LINE_SLACK
        return self.body_bytes, None


def too_many_bytes(limit: int) -> str:
    return f"the body is larger than {limit} bytes"


def too_many_lines(limit: int) -> str:
    return f"the file has more than {limit} lines; split it"


class _LineCounter:
    """Lines as the CSV reader sees them: ends at LF, CRLF or a lone CR, plus an unterminated last one."""

    def __init__(self) -> None:
        self.ended = 0
        self._after_cr = False
        self._open = False

    def feed(self, chunk: bytes) -> None:
        if not chunk:
            return
        self.ended += chunk.count(b"\n") + chunk.count(b"\r") - chunk.count(b"\r\n")
        if self._after_cr and chunk.startswith(b"\n"):
            self.ended -= 1  # a CRLF split between two chunks
        self._after_cr = chunk.endswith(b"\r")
        self._open = chunk[-1:] not in (b"\n", b"\r")

    @property
    def lines(self) -> int:
        return self.ended + (1 if self._open else 0)


def count_lines(text: str) -> int:
    """The exact line count of a decoded CSV, by the same rule as ``BodyLimit``'s."""
    counter = _LineCounter()
    counter.feed(text.encode("utf-8", errors="replace"))
    return counter.lines


def check_bulk_lines(text: str, limit: int) -> None:
    if count_lines(text) > limit:
        raise BodyTooLarge(too_many_lines(limit))


async def _answer(send: Send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


class BodyLimit:
    def __init__(self, app: ASGIApp, limits: EdgeLimits) -> None:
        self.app, self.limits = app, limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        max_bytes, max_lines = self.limits.of(scope["method"], scope["path"])
        declared = _content_length(scope)
        if declared is not None and declared > max_bytes:
            await _answer(send, 413, too_many_bytes(max_bytes))  # nothing read, nothing parsed
            return
        received, lines = 0, _LineCounter()
        refusal: str | None = None
        answered = False

        async def counted() -> Message:
            nonlocal received, refusal
            message = await receive()
            if message["type"] == "http.request":
                chunk: bytes = message.get("body", b"")
                received += len(chunk)
                if received > max_bytes:
                    refusal = too_many_bytes(max_bytes)
                elif max_lines is not None:
                    lines.feed(chunk)
                    if lines.lines > max_lines:
                        refusal = too_many_lines(max_lines - MULTIPART_LINE_SLACK)
                if refusal is not None:
                    raise BodyTooLarge(refusal)
            return message

        async def guarded(message: Message) -> None:
            nonlocal answered
            if refusal is None:
                await send(message)
            elif message["type"] == "http.response.start" and not answered:
                answered = True  # whatever the app made of the exception, the answer is this 413
                await _answer(send, 413, refusal)

        try:
            await self.app(scope, counted, guarded)
        except Exception:
            if refusal is None:
                raise
            if not answered:  # the refusal itself came back up (an error page re-raises): answered once
                answered = True
                await _answer(send, 413, refusal)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the HTTP server refuses it before the app sees it
    return None


class SecurityHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = str(scope["path"]).startswith(STATIC_PREFIX)
        https = scope.get("scheme") == "https"

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
                headers["X-Frame-Options"] = "DENY"
                headers["X-Content-Type-Options"] = "nosniff"
                headers["Referrer-Policy"] = "no-referrer"
                if not static:
                    headers["Cache-Control"] = "no-store"
                if https:
                    headers["Strict-Transport-Security"] = HSTS
            await send(message)

        await self.app(scope, receive, with_headers)


def harden(app: ASGIApp, settings: Settings) -> ASGIApp:
    """The app as the API process serves it: headers outermost, so the 413s get them too."""
    return SecurityHeaders(BodyLimit(app, EdgeLimits.from_settings(settings)))


async def refuse_control_characters(request: Request) -> None:
    """On every route: a path id with a control character is unknown (404, as any unknown customer),
    a query value with one is invalid (422)."""
    if any(holds_control_character(str(value)) for value in request.path_params.values()):
        raise NotFound()
    bad: list[dict[str, Any]] = [
        {"loc": ("query", key), "msg": "must not contain control characters (U+0000 to U+001F)",
         "type": "string_pattern_mismatch", "input": ""}
        for key, value in request.query_params.multi_items()
        if holds_control_character(key) or holds_control_character(value)]
    if bad:
        raise RequestValidationError(bad)
