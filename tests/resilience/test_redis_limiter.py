"""RedisRateLimiter / RedisKeyedRateLimiter against a real redis-server."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator

import pytest
import redis
from redis.crc import key_slot

from resilience.errors import ConfigTypeError, ConfigValueError, RateLimitError
from resilience.events import RateLimitRejected, bus
from resilience.rate_limiter import KeyedRateLimiter, RateLimitConfig, RateLimiter
from resilience.rate_limiter import rate_limiter_registry as registry
from resilience.redis import RedisKeyedRateLimiter, RedisRateLimiter, from_url
from tests.resilience._redis_fixtures import *  # noqa: F403
from tests.resilience.redis_server import RedisServer, free_port


class FakeTime:
    """Epoch seconds for the bucket (time_source) and a monotonic clock, moved by hand."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def fake() -> FakeTime:
    return FakeTime()


def make(
    client: redis.Redis, name: str, fake: FakeTime, *, register: bool = True, **config: object
) -> RedisRateLimiter:
    settings = {"max_requests": 2, "time_window": 1.0, **config}
    return RedisRateLimiter(
        RateLimitConfig(**settings),  # type: ignore[arg-type]
        name=name,
        redis=client,
        clock=fake,
        sleep=fake.advance,
        time_source=fake,
        register=register,
    )


@pytest.fixture
def dead_client() -> Iterator[redis.Redis]:
    client = from_url(f"redis://127.0.0.1:{free_port()}/0", socket_timeout=0.05)
    yield client
    client.close()


def test_admits_up_to_capacity_then_refuses(redis_client, name, fake):
    limiter = make(redis_client, name, fake, burst_size=1)
    assert [limiter.try_acquire() for _ in range(4)] == [True, True, True, False]
    assert (limiter.allowed, limiter.rejected) == (3, 1)


def test_refills_at_the_configured_rate(redis_client, name, fake):
    limiter = make(redis_client, name, fake)
    assert limiter.try_acquire(2)
    assert not limiter.try_acquire()
    fake.advance(0.5)  # rate 2/s: one token
    assert limiter.available_tokens() == pytest.approx(1.0)
    assert limiter.try_acquire()
    assert not limiter.try_acquire()


def test_two_limiters_with_one_name_share_one_bucket(redis_server, redis_client, name, fake):
    other_client = from_url(redis_server.url)
    first = make(redis_client, name, fake)
    second = make(other_client, name, fake, register=False)
    assert first.try_acquire()
    assert second.try_acquire()
    assert not first.try_acquire()
    assert not second.try_acquire()
    other_client.close()


def test_retry_after_says_when_tokens_return(redis_client, name, fake):
    limiter = make(redis_client, name, fake)
    assert limiter.retry_after() == 0.0
    limiter.try_acquire(2)
    assert limiter.retry_after() == pytest.approx(0.5)
    assert limiter.retry_after(2) == pytest.approx(1.0)


def test_acquire_sleeps_until_the_shared_bucket_refills(redis_client, name, fake):
    limiter = make(redis_client, name, fake)
    limiter.acquire(2)
    start = fake.now
    limiter.acquire()
    assert fake.now - start == pytest.approx(0.5)


def test_acquire_raises_rate_limit_error_when_timeout_is_too_short(redis_client, name, fake):
    limiter = make(redis_client, name, fake)
    limiter.acquire(2)
    with pytest.raises(RateLimitError) as info:
        limiter.acquire(timeout=0.1)
    assert info.value.retry_after == pytest.approx(0.5)
    assert info.value.name == name


async def test_aacquire_waits_for_the_bucket_with_async_sleep(redis_client, name, fake):
    slept: list[float] = []

    async def async_sleep(seconds: float) -> None:
        slept.append(seconds)
        fake.advance(seconds)

    limiter = RedisRateLimiter(
        RateLimitConfig(max_requests=2, time_window=1.0),
        name=name,
        redis=redis_client,
        clock=fake,
        async_sleep=async_sleep,
        time_source=fake,
    )
    await limiter.aacquire(2)
    await limiter.aacquire()
    assert slept == [pytest.approx(0.5)]
    assert await limiter.atry_acquire() is False


async def test_aacquire_timeout_raises(redis_client, name, fake):
    limiter = make(redis_client, name, fake)
    await limiter.aacquire(2)
    with pytest.raises(RateLimitError):
        await limiter.aacquire(timeout=0)


def test_a_check_is_one_evalsha_round_trip(redis_client, name, fake):
    limiter = make(redis_client, name, fake, max_requests=100)
    limiter.try_acquire()  # loads the script

    def calls() -> dict[str, int]:
        stats = redis_client.info("commandstats")
        return {cmd: int(value["calls"]) for cmd, value in stats.items()}

    before = calls()
    for _ in range(10):
        limiter.try_acquire()
    after = calls()
    delta = {cmd: after[cmd] - before.get(cmd, 0) for cmd in after}
    # commandstats also counts the commands the script runs inside Redis.
    inside = {"cmdstat_hmget", "cmdstat_hset", "cmdstat_pexpire", "cmdstat_time", "cmdstat_info"}
    sent = {cmd: count for cmd, count in delta.items() if count and cmd not in inside}
    assert sent == {"cmdstat_evalsha": 10}


def test_bucket_time_comes_from_redis_time(redis_client, name):
    limiter = RedisRateLimiter(
        RateLimitConfig(max_requests=5, time_window=1.0), name=name, redis=redis_client
    )
    assert limiter.try_acquire()
    seconds, micros = redis_client.time()
    stored = int(redis_client.hget(f"resilience:rl:{{{name}}}", "ts"))
    assert abs(seconds * 1_000_000 + micros - stored) < 1_000_000


def test_keys_expire_once_the_bucket_would_be_full(redis_client, name, fake):
    limiter = make(redis_client, name, fake, max_requests=10, time_window=60.0)
    limiter.try_acquire()
    ttl = redis_client.pttl(f"resilience:rl:{{{name}}}")
    assert 60_000 < ttl <= 61_000


def test_keyed_limiter_keeps_one_bucket_per_key(redis_client, name, fake):
    limiter = RedisKeyedRateLimiter(
        RateLimitConfig(max_requests=1, time_window=10.0),
        name=name,
        redis=redis_client,
        clock=fake,
        time_source=fake,
    )
    assert limiter.try_acquire("alice")
    assert not limiter.try_acquire("alice")
    assert limiter.try_acquire("bob")
    assert limiter.available_tokens("carol") == 1.0
    assert limiter.retry_after("alice") == pytest.approx(10.0)
    with pytest.raises(RateLimitError) as info:
        limiter.acquire("alice", timeout=1)
    assert info.value.name == name
    assert (limiter.allowed, limiter.rejected) == (2, 2)


async def test_keyed_limiter_async_api(redis_client, name, fake):
    limiter = RedisKeyedRateLimiter(
        RateLimitConfig(max_requests=1, time_window=10.0),
        name=name,
        redis=redis_client,
        time_source=fake,
    )
    await limiter.aacquire("alice")
    assert await limiter.atry_acquire("alice") is False


def test_all_keys_of_a_keyed_limiter_are_in_one_cluster_slot(redis_client, name, fake):
    limiter = RedisKeyedRateLimiter(
        RateLimitConfig(max_requests=1, time_window=1.0), name=name, redis=redis_client
    )
    slots = {key_slot(limiter.redis_key(user).encode()) for user in ("a", "b", "c", 42)}
    assert slots == {key_slot(name.encode())}


def test_limiters_register_and_snapshot_like_the_in_memory_ones(redis_client, name, fake):
    limiter = make(redis_client, name, fake)
    assert isinstance(limiter, RateLimiter)
    assert registry.get(name) is limiter
    limiter.try_acquire()
    view = limiter.snapshot()
    assert view["kind"] == "bucket"
    assert view["available_tokens"] == pytest.approx(1.0)
    assert (view["allowed"], view["rejected"]) == (1, 0)
    assert view["backend"] == "redis"
    assert view["backend_available"] is True
    with pytest.raises(ConfigValueError):
        make(redis_client, name, fake)


def test_keyed_snapshot_is_keyed(redis_client, name):
    limiter = RedisKeyedRateLimiter(
        RateLimitConfig(max_requests=1, time_window=1.0), name=name, redis=redis_client
    )
    assert isinstance(limiter, KeyedRateLimiter)
    view = limiter.snapshot()
    assert view["kind"] == "keyed"
    assert view["keys"] is None
    assert view["busiest_keys"] == []


def test_rejections_are_published_on_the_bus(redis_client, name, fake):
    seen: list[object] = []
    unsubscribe = bus.subscribe(seen.append)
    try:
        limiter = make(redis_client, name, fake, max_requests=1)
        limiter.try_acquire()
        limiter.try_acquire()
    finally:
        unsubscribe()
    rejected = [event for event in seen if isinstance(event, RateLimitRejected)]
    assert len(rejected) == 1
    assert rejected[0].name == name
    assert rejected[0].retry_after == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("kwargs", "error", "field"),
    [
        ({"name": "a{b}"}, ConfigValueError, "name"),
        ({"name": ""}, ConfigValueError, "name"),
        ({"name": 3}, ConfigTypeError, "name"),
        ({"name": "ok", "fail_open": "yes"}, ConfigTypeError, "fail_open"),
        ({"name": "ok", "key_prefix": None}, ConfigTypeError, "key_prefix"),
        ({"name": "ok", "redis": "redis://x"}, ConfigTypeError, "redis"),
        ({"name": "ok", "retry_interval": 0}, ConfigValueError, "retry_interval"),
    ],
)
def test_bad_arguments_are_refused_naming_the_field(redis_client, kwargs, error, field):
    kwargs.setdefault("redis", redis_client)
    with pytest.raises(error, match=field):
        RedisRateLimiter(RateLimitConfig(max_requests=1, time_window=1.0), **kwargs)
    assert registry.get("ok") is None


def test_creating_a_limiter_does_not_connect(dead_client, name):
    limiter = RedisRateLimiter(
        RateLimitConfig(max_requests=1, time_window=1.0), name=name, redis=dead_client
    )
    assert limiter._bucket.backend.errors == 0
    assert limiter.try_acquire()  # the first check connects, fails, and fails open
    assert limiter._bucket.backend.errors == 1


def test_from_url_reads_redis_url(monkeypatch, redis_server):
    monkeypatch.setenv("REDIS_URL", redis_server.url)
    client = from_url()
    assert client.ping()
    client.close()
    monkeypatch.delenv("REDIS_URL")
    with pytest.raises(ConfigValueError, match="REDIS_URL"):
        from_url()


def test_primitives_without_a_client_share_one_from_redis_url(monkeypatch, redis_server, name):
    monkeypatch.setenv("REDIS_URL", redis_server.url)
    config = RateLimitConfig(max_requests=1, time_window=60.0)
    first = RedisRateLimiter(config, name=name)
    second = RedisKeyedRateLimiter(config, name=f"{name}-keyed")
    try:
        assert first._bucket.backend.client is second._bucket.backend.client
        assert first.try_acquire()
        assert not first.try_acquire()
    finally:
        registry.remove(f"{name}-keyed")


def test_redis_down_fails_open_counts_and_warns_once(dead_client, name, fake, caplog):
    limiter = make(dead_client, name, fake, max_requests=1)
    with caplog.at_level(logging.WARNING, logger="resilience.redis"):
        results = [limiter.try_acquire() for _ in range(5)]
        fake.advance(2.0)  # past retry_interval: tries Redis again, fails again
        results.append(limiter.try_acquire())
    assert results == [True] * 6
    view = limiter.snapshot()
    assert view["fallback_admitted"] == 6
    assert view["backend_errors"] >= 2
    assert view["backend_available"] is False
    assert "ConnectionError" in view["backend_last_error"]
    assert len([r for r in caplog.records if "unavailable" in r.message]) == 1


def test_redis_down_fails_closed_when_configured(dead_client, name, fake):
    limiter = RedisRateLimiter(
        RateLimitConfig(max_requests=1, time_window=1.0),
        name=name,
        redis=dead_client,
        fail_open=False,
        retry_interval=2.0,
        clock=fake,
    )
    assert limiter.try_acquire() is False
    with pytest.raises(RateLimitError) as info:
        limiter.acquire(timeout=0)
    assert info.value.retry_after == 2.0
    assert limiter.available_tokens() == 0.0
    assert limiter.snapshot()["fallback_rejected"] >= 2


def test_limiting_resumes_by_itself_after_a_redis_restart(fresh_server: RedisServer, name, fake):
    client = from_url(fresh_server.url)
    limiter = make(client, name, fake, max_requests=1, time_window=3600.0)
    assert limiter.try_acquire()
    assert not limiter.try_acquire()
    fresh_server.kill()
    assert limiter.try_acquire()  # fail-open while down
    fresh_server.start()
    fake.advance(1.0)  # the back-off is over
    assert limiter.try_acquire()  # an empty Redis: a full bucket (the script is reloaded)
    assert not limiter.try_acquire()
    assert limiter.snapshot()["backend_available"] is True
    client.close()


def test_concurrent_threads_never_exceed_the_budget(redis_client, name):
    limiter = RedisRateLimiter(
        RateLimitConfig(max_requests=200, time_window=3600.0), name=name, redis=redis_client
    )

    async def hammer() -> list[bool]:
        return await asyncio.gather(*(limiter.atry_acquire() for _ in range(400)))

    results = asyncio.run(hammer())
    assert results.count(True) == 200
