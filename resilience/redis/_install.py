"""Cluster mode switch: make the registries build Redis-backed primitives.

Private: import :func:`install` / :func:`uninstall` from :mod:`resilience.redis`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import redis

from resilience.circuit_breaker import CircuitBreaker, circuit_breaker_registry
from resilience.circuit_breaker._config import CircuitBreakerConfig
from resilience.rate_limiter import RateLimiter
from resilience.rate_limiter._core import RateLimitConfig, rate_limiter_registry
from resilience.rate_limiter._keyed import KeyedRateLimiter
from resilience.redis._client import check_client, from_url
from resilience.redis.breaker import RedisCircuitBreaker
from resilience.redis.limiter import RedisKeyedRateLimiter, RedisRateLimiter

__all__ = ["install", "installed", "uninstall"]

logger = logging.getLogger("resilience.redis")

_lock = threading.Lock()
_client: redis.Redis | None = None


def _usable(name: str) -> bool:
    # Braces would break the Redis Cluster hash tag the primitives build from the name.
    return "{" not in name and "}" not in name


def install(url: str | None = None, *, client: redis.Redis | None = None) -> redis.Redis:
    """Switch the process to cluster mode: breakers and limiters that the registries
    create from now on (``get_or_create`` and the decorators) keep their state in
    Redis, shared with every process using the same Redis.

    Nothing connects here (the client connects on first use), so it is safe at start-up,
    in ``migrate`` and at import time. Primitives created before, or built directly from
    a class, are not changed. A name containing ``{`` or ``}`` cannot be a Redis hash tag:
    such a primitive is created in memory, with a warning. Calling it again replaces the
    client used for new primitives.

    Args:
        url: ``redis://`` URL; default the ``REDIS_URL`` environment variable.
        client: a ``redis.Redis`` to use instead of building one from ``url``.

    Returns:
        The client new primitives use.

    Raises:
        ConfigValueError: no ``url``/``client`` and ``REDIS_URL`` is unset or empty.
        ConfigTypeError: ``client`` is not a ``redis.Redis``.
    """
    global _client
    chosen = (
        from_url(url) if client is None else check_client(client, what="resilience.redis.install")
    )

    def breaker(name: str, config: CircuitBreakerConfig | None) -> CircuitBreaker:
        if isinstance(name, str) and _usable(name):
            return RedisCircuitBreaker(name, config, redis=chosen)
        logger.warning("circuit breaker %r is not shared through Redis (braces in name)", name)
        return CircuitBreaker(name, config)

    def limiter(
        config: RateLimitConfig,
        *,
        name: str,
        clock: Callable[[], float] = time.monotonic,
        register: bool = True,
    ) -> RateLimiter:
        if isinstance(name, str) and _usable(name):
            return RedisRateLimiter(config, name=name, redis=chosen, clock=clock, register=register)
        logger.warning("rate limiter %r is not shared through Redis (braces in name)", name)
        return RateLimiter(config, name=name, clock=clock, register=register)

    def keyed(
        config: RateLimitConfig,
        *,
        name: str,
        max_keys: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
        register: bool = True,
    ) -> KeyedRateLimiter:
        if isinstance(name, str) and _usable(name):
            # Redis expires idle keys itself: max_keys only bounds the in-memory map.
            return RedisKeyedRateLimiter(
                config, name=name, redis=chosen, clock=clock, register=register
            )
        logger.warning("rate limiter %r is not shared through Redis (braces in name)", name)
        return KeyedRateLimiter(
            config, name=name, max_keys=max_keys, clock=clock, register=register
        )

    with _lock:
        _client = chosen
        circuit_breaker_registry.factory = breaker
        rate_limiter_registry.factory = limiter
        rate_limiter_registry.keyed_factory = keyed
    return chosen


def uninstall() -> None:
    """Back to in-memory primitives for everything created from now on (tests)."""
    global _client
    with _lock:
        _client = None
        circuit_breaker_registry.factory = CircuitBreaker
        rate_limiter_registry.factory = None
        rate_limiter_registry.keyed_factory = None


def installed() -> redis.Redis | None:
    """The client of cluster mode, or None when :func:`install` is not in effect."""
    return _client
