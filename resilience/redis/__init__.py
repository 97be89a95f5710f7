"""Cluster mode: rate limiters and circuit breakers whose state lives in Redis.

Importing this package connects to nothing. :func:`from_url` builds a client from
``REDIS_URL`` with short timeouts; the primitives take it as ``redis=``, or share
:func:`default_client` (one client per process, from ``REDIS_URL``). :func:`install`
switches the registries (and so ``@circuit_breaker`` / ``get_or_create``) to these
classes; :func:`uninstall` switches back.
"""

from __future__ import annotations

from resilience.redis._client import default_client, from_url
from resilience.redis._install import install, installed, uninstall
from resilience.redis.breaker import RedisCircuitBreaker
from resilience.redis.keyed_limiter import RedisKeyedRateLimiter
from resilience.redis.limiter import RedisRateLimiter

__all__ = [
    "RedisCircuitBreaker",
    "RedisKeyedRateLimiter",
    "RedisRateLimiter",
    "default_client",
    "from_url",
    "install",
    "installed",
    "uninstall",
]
