"""Fixtures of the Redis tests: a real redis-server, clients, clean registries.

Import with ``from tests.resilience._redis_fixtures import *`` (the conftest of this
directory is the lead's). Without redis-server the tests skip, except under CI=true
where they fail: the Redis part of the suite must not silently vanish there.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
import redis

from resilience.circuit_breaker import circuit_breaker_registry
from resilience.rate_limiter import rate_limiter_registry
from resilience.redis import from_url
from tests.resilience.redis_server import RedisServer, redis_server_path

__all__ = ["fresh_server", "name", "redis_client", "redis_server", "require_redis_server"]


def require_redis_server() -> str:
    path = redis_server_path()
    if path is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("redis-server is not installed (CI=true: run `make system-deps`)")
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    return path


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One redis-server for the session (tests use distinct names, so keys never clash)."""
    server = RedisServer(require_redis_server()).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def fresh_server() -> Iterator[RedisServer]:
    """A redis-server of this test's own, which it may kill and restart."""
    server = RedisServer(require_redis_server()).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    client = from_url(redis_server.url)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def name() -> Iterator[str]:
    """A unique primitive name, removed from the registries afterwards."""
    value = f"t-{uuid.uuid4().hex[:12]}"
    yield value
    rate_limiter_registry.remove(value)
    breaker = circuit_breaker_registry.remove(value)
    close = getattr(breaker, "close", None)
    if close is not None:
        close()
