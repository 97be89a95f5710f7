"""Cluster mode: with ``REDIS_URL`` set, several server processes act as one system.

The runtime (:mod:`dashboard.runtime`) calls :func:`start` first when it starts: it
switches the resilience registries to Redis-backed breakers and limiters
(:func:`resilience.redis.install`), so every breaker or limiter the dashboard and its
workloads create by name is shared by all processes on that Redis. It connects to
nothing (the client connects on first use). ``migrate`` and other commands do not start
the runtime, so they never touch Redis.

The rest of cluster mode lives where it acts: channels-redis in ``settings``,
per-process live groups in :mod:`dashboard.live.broadcast`, one history row per
transition in :mod:`dashboard.breakers.recorder`.
"""

from __future__ import annotations

import ipaddress
import logging
from urllib.parse import urlsplit

from django.conf import settings

logger = logging.getLogger(__name__)


def enabled() -> bool:
    """True when ``settings.REDIS_URL`` is set."""
    return bool(getattr(settings, "REDIS_URL", ""))


def start() -> bool:
    """Install the Redis factories if ``REDIS_URL`` is set; True when it did."""
    if not enabled():
        return False
    from resilience.redis import install

    warning = redis_url_warning(settings.REDIS_URL)
    if warning:
        logger.warning("%s", warning)
    install(settings.REDIS_URL)
    return True


def stop() -> None:
    """Back to in-memory factories for breakers and limiters created from now on."""
    from resilience.redis import uninstall

    uninstall()


def redis_url_warning(url: str) -> str:
    """Why ``url`` is risky ("" if it is not): live fragments (HTML), breaker state and
    limiter buckets cross it, so anyone who can reach that Redis can change them."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return ""
    host = parts.hostname or ""
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if loopback or parts.password:
        return ""
    return (
        f"REDIS_URL points at {host!r} without a password: every process that can reach it "
        "can push HTML to the dashboard's pages and change breakers and limiters. Use "
        "rediss://:PASSWORD@host:6380/0 (TLS and AUTH) or keep Redis on loopback."
    )
