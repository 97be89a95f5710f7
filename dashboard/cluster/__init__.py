"""Cluster mode: with ``REDIS_URL`` set, several server processes act as one system.

This app's ``ready()`` switches the resilience registries to Redis-backed breakers and
limiters (:func:`resilience.redis.install`), so every breaker or limiter the dashboard
and its workloads create by name is shared by all processes on that Redis. It connects
to nothing (the client connects on first use), so ``migrate`` and other commands work
without a running Redis. It is listed before the other dashboard apps, so that nothing
they create at start-up is built in memory first.

The rest of cluster mode lives where it acts: channels-redis in ``settings``,
per-process live groups in :mod:`dashboard.live.broadcast`, one history row per
transition in :mod:`dashboard.breakers.recorder`.
"""

from __future__ import annotations

from django.conf import settings


def enabled() -> bool:
    """True when ``settings.REDIS_URL`` is set."""
    return bool(getattr(settings, "REDIS_URL", ""))


def start() -> bool:
    """Install the Redis factories if ``REDIS_URL`` is set; True when it did."""
    if not enabled():
        return False
    from resilience.redis import install

    install(settings.REDIS_URL)
    return True
