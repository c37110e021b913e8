"""What the console asks of the browser: how its session cookie is set, and which sign-ins to trust.

The cookie is ``Secure`` (and then named with the ``__Host-`` prefix: Secure, ``Path=/``, no
``Domain``, so no sibling host or plain-HTTP page can set or shadow it) unless the console is plainly
served to this machine only: plain HTTP on a loopback address, as ``suspensions dev`` and the tests do,
where a browser would not send a Secure cookie back. Behind a TLS proxy the scheme is https (uvicorn
applies the trusted proxy's ``X-Forwarded-Proto``), and a public Host name is never loopback.

A sign-in must come from the console's own page: a browser says where a request comes from
(``Sec-Fetch-Site``, which no page can forge, or else ``Origin``); one from another site is refused
before any token is looked at, so no site can sign a visitor into an account of its choosing.
Clients that send neither (curl, scripts) are not browsers and are not at risk.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from fastapi import Request, Response

COOKIE = "suspensions_session"
SECURE_COOKIE = "__Host-suspensions_session"
SAME_SITE_FETCHES = ("same-origin", "none")  # "none": typed or bookmarked by the person themselves
DEFAULT_PORTS = {"http": 80, "https": 443}


def _loopback(host: str | None) -> bool:
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _host_name(host_header: str) -> str:
    return urlsplit(f"//{host_header}").hostname or ""


def cookie_is_secure(request: Request) -> bool:
    server = request.scope.get("server")
    local_plain_http = (request.url.scheme == "http" and _loopback(server[0] if server else None)
                        and _loopback(_host_name(request.headers.get("host", ""))))
    return not local_plain_http


def cookie_name(request: Request) -> str:
    return SECURE_COOKIE if cookie_is_secure(request) else COOKIE


def session_cookie(request: Request) -> str | None:
    return request.cookies.get(cookie_name(request))


def set_session_cookie(response: Response, request: Request, value: str, max_age_s: int) -> None:
    secure = cookie_is_secure(request)
    response.set_cookie(SECURE_COOKIE if secure else COOKIE, value, max_age=max_age_s, path="/", secure=secure,
                        httponly=True, samesite="strict")


def clear_session_cookie(response: Response, request: Request) -> None:
    secure = cookie_is_secure(request)
    response.delete_cookie(SECURE_COOKIE if secure else COOKIE, path="/", secure=secure, httponly=True,
                           samesite="strict")


def _host_and_port(netloc: str, scheme: str) -> tuple[str, int | None]:
    parts = urlsplit(f"//{netloc}")
    try:
        port = parts.port or DEFAULT_PORTS.get(scheme)
    except ValueError:
        port = None
    return (parts.hostname or "").lower(), port


def from_this_site(request: Request) -> bool:
    """Whether the browser says the request comes from the console's own pages (or says nothing)."""
    fetch_site = request.headers.get("sec-fetch-site")
    if fetch_site is not None:
        return fetch_site.lower() in SAME_SITE_FETCHES
    origin = request.headers.get("origin")
    if origin is None:
        return True
    parts = urlsplit(origin)
    if origin == "null" or not parts.netloc:
        return False
    # The Host the browser asked for, its port read by the Origin's scheme: a TLS proxy that does not
    # pass X-Forwarded-Proto still matches, another host or port does not.
    scheme = parts.scheme.lower()
    return _host_and_port(parts.netloc, scheme) == _host_and_port(request.headers.get("host", ""), scheme)
