"""Where webhooks may go (SSRF): ``https`` only, and only to public addresses, checked for the address a
name resolves to when the connection is made (a name that resolved to a public address at registration
may point at a private one later). ``SUSPENSIONS_WEBHOOKS_ALLOW_PRIVATE=true`` lifts both rules.

Private means loopback, RFC 1918 and the other non-global ranges, link-local (169.254.0.0/16, where
the cloud metadata address lives), multicast, unspecified and reserved addresses, IPv4-mapped IPv6
included.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

URL_MAX_LENGTH = 2000
METADATA_ADDRESSES = {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}


class DestinationRefused(ValueError):
    """A URL or address webhooks may not be sent to; the message says why."""


def refused_address(text: str) -> str | None:
    """Why this address is refused ("a loopback address"), or None for a public one."""
    try:
        address = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return "not an IP address"
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address in METADATA_ADDRESSES:
        return "the cloud metadata address"
    for kind in ("loopback", "link_local", "multicast", "private", "unspecified", "reserved"):
        if getattr(address, f"is_{kind}"):
            return f"a {kind.replace('_', '-')} address"
    if not address.is_global:
        return "not a public address"
    return None


def check_url(url: str, allow_private: bool) -> str:
    """The URL as registered, or DestinationRefused: an absolute http(s) URL with a host, ``https`` unless
    private destinations are allowed, and no private IP literal."""
    if len(url) > URL_MAX_LENGTH:
        raise DestinationRefused(f"a URL has at most {URL_MAX_LENGTH} characters")
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise DestinationRefused("the URL must be absolute, http(s)://host/...")
    if any(ord(character) < 33 for character in url):
        raise DestinationRefused("the URL may not hold spaces or control characters")
    if parts.username is not None or parts.password is not None:
        # Lists and the console show the URL; a secret belongs in the signing, not in the address.
        raise DestinationRefused("the URL may not hold a user name or password (the signature authenticates)")
    if allow_private:
        return url
    if parts.scheme != "https":
        raise DestinationRefused("only https URLs (SUSPENSIONS_WEBHOOKS_ALLOW_PRIVATE=true allows http)")
    check_host_literal(parts.hostname)
    return url


def check_host_literal(host: str) -> None:
    """Refuse an IP literal host that is not public (a name is checked when it is resolved)."""
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return
    reason = refused_address(host)
    if reason is not None:
        raise DestinationRefused(f"refused: {host} is {reason}")


class PublicOnlyResolver(AbstractResolver):
    """aiohttp's resolver, refusing a name any of whose addresses is not public: the connection is made
    only to addresses checked here, at delivery time (no DNS cache between the check and the use)."""

    def __init__(self) -> None:
        self._resolver = DefaultResolver()

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        results = await self._resolver.resolve(host, port, family)
        for result in results:
            reason = refused_address(result["host"])
            if reason is not None:
                raise DestinationRefused(f"refused: {host} resolves to {result['host']}, {reason}")
        return results

    async def close(self) -> None:
        await self._resolver.close()
