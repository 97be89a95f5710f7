"""The client's address, trusting forwarded headers only from configured proxies.

``REMOTE_ADDR`` is the peer of the TCP connection. Behind a reverse proxy that peer is
the proxy, and the client is in ``X-Forwarded-For``, a header any client can also send.
So the header is read only when the peer is listed in ``TRUSTED_PROXIES``, and then
from the right: each trusted proxy appends the address it saw, so the right-most
address that is not one of our proxies is the first one no trusted party vouches
against; everything left of it may be made up by the client.

(Run daphne *without* ``--proxy-headers``: with it, daphne replaces the peer address by
the header's left-most entry, which the client controls.)
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest

__all__ = ["FORWARDING_HEADERS", "client_address", "is_loopback", "trusted_proxies"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

FORWARDING_HEADERS = ("HTTP_X_FORWARDED_FOR", "HTTP_FORWARDED", "HTTP_X_REAL_IP")


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    text = text.strip().strip('"')
    if text.startswith("[") and "]" in text:  # [v6]:port
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:  # v4:port
        text = text.split(":", 1)[0]
    try:
        ip = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def trusted_proxies() -> list[Network]:
    value = getattr(settings, "TRUSTED_PROXIES", ())
    if isinstance(value, str):
        value = [item for item in value.split(",") if item.strip()]
    if not isinstance(value, Iterable):
        raise ImproperlyConfigured(f"TRUSTED_PROXIES must be a list, got {value!r}")
    try:
        return [ipaddress.ip_network(str(item).strip(), strict=False) for item in value]
    except ValueError as exc:
        raise ImproperlyConfigured(f"TRUSTED_PROXIES: {exc}") from exc


def _trusted(text: str, proxies: list[Network]) -> bool:
    ip = _ip(text)
    return ip is not None and any(ip.version == n.version and ip in n for n in proxies)


def client_address(request: HttpRequest) -> str:
    """The client's address (``""`` if unknown); see the module docstring."""
    peer = str(request.META.get("REMOTE_ADDR", "") or "")
    proxies = trusted_proxies()
    if not proxies or not _trusted(peer, proxies):
        return peer
    hops = [h.strip() for h in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")]
    hops = [h for h in hops if h]
    for hop in reversed(hops):
        if not _trusted(hop, proxies):
            ip = _ip(hop)
            return str(ip) if ip is not None else ""
    # Every hop is one of ours (or there is no header): the left-most is the origin.
    if hops:
        ip = _ip(hops[0])
        return str(ip) if ip is not None else ""
    return peer


def is_loopback(address: str) -> bool:
    ip = _ip(address)
    return ip is not None and ip.is_loopback


def forwarded_by_untrusted_peer(request: HttpRequest) -> bool:
    """True if the request carries forwarding headers but its peer is no trusted proxy:
    a proxy we were not told about (every client would look like the proxy), or a
    client making the headers up."""
    if not any(request.META.get(name) for name in FORWARDING_HEADERS):
        return False
    return not _trusted(str(request.META.get("REMOTE_ADDR", "") or ""), trusted_proxies())
