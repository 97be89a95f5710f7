"""Token-bucket rate limiting: one bucket, one bucket per key, and a decorator.

A bucket holds up to ``capacity`` tokens, starts full and refills continuously at
``rate`` tokens per second; each request spends tokens or is refused.

The package's private modules import in one direction: ``_core`` (config, waiting,
registry) <- ``_keyed`` and ``_bucket`` <- ``_decorator``. The registry's default
factories are looked up on first use, not at import time.
"""

from __future__ import annotations

from resilience.errors import RateLimitError
from resilience.rate_limiter._bucket import RateLimiter
from resilience.rate_limiter._core import (
    AnyRateLimiter,
    KeyedLimiterFactory,
    LimiterFactory,
    RateLimitConfig,
    RateLimiterRegistry,
    rate_limiter_registry,
)
from resilience.rate_limiter._decorator import rate_limit
from resilience.rate_limiter._keyed import KeyedRateLimiter

__all__ = [
    "AnyRateLimiter",
    "KeyedLimiterFactory",
    "KeyedRateLimiter",
    "LimiterFactory",
    "RateLimitConfig",
    "RateLimitError",
    "RateLimiter",
    "RateLimiterRegistry",
    "rate_limit",
    "rate_limiter_registry",
]
