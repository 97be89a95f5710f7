"""POST a webhook without letting a channel editor reach the server's own network (SSRF).

A channel's URL is chosen by whoever may edit channels, and the request leaves from the
dashboard server, which sits next to Redis, the database and the cloud metadata service.
So every delivery:

1. resolves the host name once, at delivery time, and refuses the whole request if any
   address it resolves to is loopback, private, link-local, multicast, reserved,
   unspecified or a cloud metadata address (``ALERTS_WEBHOOK_ALLOW_PRIVATE`` lets private
   ranges and loopback through for on-premises receivers; metadata, link-local,
   multicast and reserved addresses stay refused);
2. connects to the address it checked, not to the name: the socket is opened to that IP
   while the ``Host`` header and the TLS SNI/certificate check use the name, so a DNS
   answer that changes between the check and the connection (rebinding) is never used;
3. never follows a redirect (a 3xx is reported as the receiver's answer);
4. has a total deadline: a watchdog timer shuts the socket down when it passes, so a
   receiver that drips its answer one byte at a time cannot hold the worker.

Concurrency: one call runs on the caller's thread; the only other thread is the
watchdog ``threading.Timer`` of that call, which only shuts down that call's socket.
"""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

__all__ = [
    "METADATA_ADDRESSES",
    "Target",
    "UnsafeWebhook",
    "WebhookHTTPError",
    "check_address",
    "parse_url",
    "post",
    "resolve",
    "validate_url",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Cloud instance metadata (AWS/GCP/Azure/OpenStack, AWS IPv6, ECS tasks, Alibaba):
# refused even when private ranges are allowed.
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in ("169.254.169.254", "169.254.170.2", "fd00:ec2::254", "100.100.100.200")
)

Resolver = Callable[[str, int], list[str]]


class UnsafeWebhook(ValueError):
    """The URL or an address it resolves to may not be called."""


class WebhookHTTPError(Exception):
    """The receiver answered 429 or 5xx: worth a retry, and a failure for its breaker."""

    def __init__(self, status: int) -> None:
        super().__init__(f"receiver answered HTTP {status}")
        self.status = status


@dataclass(frozen=True, slots=True)
class Target:
    scheme: str
    host: str
    port: int
    path: str


def parse_url(url: str) -> Target:
    """The parts of a webhook URL; raises :class:`UnsafeWebhook` naming what is wrong."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise UnsafeWebhook("a webhook needs an http:// or https:// URL")
    if parts.username is not None or parts.password is not None:
        raise UnsafeWebhook("credentials in the URL are not allowed")
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise UnsafeWebhook("the URL has no host")
    try:
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError as exc:
        raise UnsafeWebhook(f"bad port: {exc}") from None
    path = parts.path or "/"
    if parts.query:
        path = f"{path}?{parts.query}"
    return Target(scheme=scheme, host=host, port=port, path=path)


def check_address(address: str, *, allow_private: bool) -> IPAddress:
    """``address`` as an IP if a webhook may connect to it; raises :class:`UnsafeWebhook`."""
    ip: IPAddress = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        # ::ffff:127.0.0.1 and 64:ff9b::/96-style wrappers are judged by what they carry.
        if ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        elif ip.sixtofour is not None:
            ip = ip.sixtofour
    if ip in METADATA_ADDRESSES:
        raise UnsafeWebhook(f"{ip} is a cloud metadata address")
    if ip.is_unspecified or ip.is_multicast or ip.is_link_local:
        raise UnsafeWebhook(f"{ip} is not a routable unicast address")
    if ip.is_reserved and not ip.is_loopback:  # Python counts 240/4 as private too
        raise UnsafeWebhook(f"{ip} is a reserved address")
    if ip.is_loopback or ip.is_private or ip in _SHARED:
        if allow_private:
            return ip
    elif ip.is_reserved or not ip.is_global:
        raise UnsafeWebhook(f"{ip} is a reserved address")
    else:
        return ip
    raise UnsafeWebhook(
        f"{ip} is a loopback or private address (set ALERTS_WEBHOOK_ALLOW_PRIVATE=true "
        "for an on-premises receiver)"
    )


_SHARED = ipaddress.ip_network("100.64.0.0/10")  # carrier-grade NAT: private in practice
_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # IPv4 addresses seen through NAT64


def _getaddrinfo(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def resolve(target: Target, *, allow_private: bool, resolver: Resolver = _getaddrinfo) -> IPAddress:
    """The one address to connect to; every address the name has must be allowed."""
    try:
        addresses = resolver(target.host, target.port)
    except OSError as exc:
        raise UnsafeWebhook(f"cannot resolve {target.host!r}: {exc}") from None
    if not addresses:
        raise UnsafeWebhook(f"{target.host!r} has no address")
    checked = [check_address(a, allow_private=allow_private) for a in addresses]
    return checked[0]


def validate_url(url: str, *, allow_private: bool, resolver: Resolver = _getaddrinfo) -> None:
    """Check a URL when a channel is saved, so the form says why it would be refused.

    A name that does not resolve yet passes (the receiver may not exist yet); delivery
    checks again, since what a name resolves to can change after the save.
    """
    target = parse_url(url)
    try:
        ipaddress.ip_address(target.host)
    except ValueError:
        try:
            addresses = resolver(target.host, target.port)
        except OSError:
            return
        for address in addresses:
            check_address(address, allow_private=allow_private)
        return
    check_address(target.host, allow_private=allow_private)


class _PinnedHTTP(http.client.HTTPConnection):
    """Connects to ``address`` while ``host`` (the name) goes into the Host header."""

    def __init__(self, host: str, port: int, address: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self.address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self.address, self.port), self.timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class _PinnedHTTPS(http.client.HTTPSConnection):
    """Connects to ``address``; SNI and the certificate are checked against the name."""

    def __init__(
        self, host: str, port: int, address: str, timeout: float, context: ssl.SSLContext
    ) -> None:
        super().__init__(host, port, timeout=timeout, context=context)
        self.address = address
        self.tls_context = context

    def connect(self) -> None:
        raw = socket.create_connection((self.address, self.port), self.timeout)
        self.sock = self.tls_context.wrap_socket(raw, server_hostname=self.host)


def post(
    url: str,
    body: bytes,
    headers: dict[str, str],
    *,
    timeout: float,
    allow_private: bool,
    resolver: Resolver = _getaddrinfo,
    tls_context: ssl.SSLContext | None = None,
) -> int:
    """POST ``body`` to ``url`` and return the status, all within ``timeout`` seconds.

    Raises:
        UnsafeWebhook: the URL or its address is refused (nothing was sent).
        WebhookHTTPError: the receiver answered 429 or 5xx.
        OSError: the connection failed or the deadline passed.
    """
    target = parse_url(url)
    deadline = time.monotonic() + timeout
    address = str(resolve(target, allow_private=allow_private, resolver=resolver))
    remaining = max(deadline - time.monotonic(), 0.001)
    connection: http.client.HTTPConnection
    if target.scheme == "https":
        context = tls_context or ssl.create_default_context()
        connection = _PinnedHTTPS(target.host, target.port, address, remaining, context)
    else:
        connection = _PinnedHTTP(target.host, target.port, address, remaining)
    expired = threading.Event()

    def cut() -> None:
        expired.set()
        sock = connection.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    watchdog = threading.Timer(remaining, cut)
    watchdog.daemon = True
    watchdog.start()
    try:
        connection.request("POST", target.path, body=body, headers=headers)
        response = connection.getresponse()
        status = int(response.status)
        with contextlib.suppress(OSError, http.client.HTTPException):
            response.read(65536)  # drain a little so the receiver sees a clean close
    except (OSError, http.client.HTTPException) as exc:
        if expired.is_set():
            raise TimeoutError(f"no answer within the {timeout:g}s delivery deadline") from None
        if isinstance(exc, OSError):
            raise
        raise OSError(f"bad HTTP answer: {type(exc).__name__}: {exc}") from None
    finally:
        watchdog.cancel()
        connection.close()
    if status == 429 or status >= 500:
        raise WebhookHTTPError(status)
    return status
