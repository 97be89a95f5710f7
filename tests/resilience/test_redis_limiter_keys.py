"""RedisKeyedRateLimiter keeps keys apart exactly as the in-memory limiter does."""

from __future__ import annotations

from collections.abc import Hashable

from resilience.rate_limiter import KeyedRateLimiter, RateLimitConfig
from resilience.redis import RedisKeyedRateLimiter
from resilience.redis.limiter import encode_key
from tests.clock import FakeClock
from tests.resilience._redis_fixtures import *  # noqa: F403

KEYS: list[Hashable] = [1, "1", 1.0, True, b"1", 1.5, "1.5", (1, "a"), ("1", "a"), (1, "a")]


def test_keys_share_a_bucket_in_redis_exactly_when_they_do_in_memory(redis_client, name):
    clock = FakeClock(1_700_000_000.0)
    config = RateLimitConfig(max_requests=1, time_window=3600.0)
    memory = KeyedRateLimiter(config, clock=clock, register=False)
    shared = RedisKeyedRateLimiter(
        config, name=name, redis=redis_client, clock=clock, time_source=clock, register=False
    )
    in_memory = [memory.try_acquire(key) for key in KEYS]
    in_redis = [shared.try_acquire(key) for key in KEYS]
    assert in_redis == in_memory
    assert in_memory == [True, True, False, False, True, True, True, True, True, False]


def test_key_encoding_is_type_tagged():
    assert encode_key(1) == encode_key(1.0) == encode_key(True) == "i:1"
    assert encode_key("1") == "s:1"
    assert encode_key(b"1") == "b:31"
    assert encode_key(("a", 1)) != encode_key(("a", "1"))
    assert encode_key("a:b") != encode_key(("a", "b"))
