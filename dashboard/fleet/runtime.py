"""The fleet's process-wide state on the server: the Redis link, started explicitly.

:func:`start` (called once the server is built: today at the end of
``dashboard/asgi.py``, beside checkpoint retention; the server's Runtime object is
meant to own it) starts the :class:`~dashboard.fleet.redis_link.RedisLink` when
``settings.REDIS_URL`` is set, and does nothing otherwise (the HTTP transport needs no
process-wide state: reports arrive as requests). :func:`stop` stops it. Tests call
both, or build a ``RedisLink`` of their own.
"""

from __future__ import annotations

import threading

from django.conf import settings

from .redis_link import RedisLink

_lock = threading.Lock()
_link: RedisLink | None = None


def start() -> RedisLink | None:
    """Start consuming fleet reports from Redis if ``REDIS_URL`` is set (idempotent)."""
    global _link
    url = getattr(settings, "REDIS_URL", "")
    if not url:
        return None
    with _lock:
        if _link is None or not _link.running:
            from resilience.redis import from_url

            link = RedisLink(from_url(url, socket_timeout=5.0, connect_timeout=2.0), block=1.0)
            _link = link.start()
        return _link


def current() -> RedisLink | None:
    """The process's link, if any: services push commands through it."""
    return _link


def install(link: RedisLink | None) -> None:
    """Make ``link`` the process's link without starting a thread (tests)."""
    global _link
    _link = link


def stop(timeout: float = 5.0) -> None:
    """Stop the link (no error if none runs)."""
    global _link
    with _lock:
        link, _link = _link, None
    if link is not None:
        link.stop(timeout)
