"""RedisRateLimiter's packed hot path and its opt-in lease mode, against a real redis-server."""

from __future__ import annotations

import asyncio
import threading

import pytest
import redis

from resilience.errors import ConfigTypeError, ConfigValueError
from resilience.rate_limiter import RateLimitConfig
from resilience.redis import RedisKeyedRateLimiter, RedisRateLimiter, from_url
from resilience.redis import limiter as limiter_module
from resilience.redis._client import pack_command
from tests.resilience._redis_fixtures import *  # noqa: F403
from tests.resilience.redis_server import RedisServer, free_port


class FakeTime:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def fake() -> FakeTime:
    return FakeTime()


def leased(
    client: redis.Redis, name: str, fake: FakeTime, *, lease: int = 5, **config: object
) -> RedisRateLimiter:
    settings = {"max_requests": 20, "time_window": 2.0, **config}
    return RedisRateLimiter(
        RateLimitConfig(**settings),  # type: ignore[arg-type]
        name=name,
        redis=client,
        clock=fake,
        sleep=fake.advance,
        time_source=fake,
        lease=lease,
    )


def evalsha_calls(client: redis.Redis) -> int:
    stats = client.info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


def stored_tokens(client: redis.Redis, name: str) -> float:
    return float(client.hget(f"resilience:rl:{{{name}}}", "tokens"))


def test_pack_command_is_resp():
    assert pack_command("EVALSHA", "ab", 1, "k") == (
        b"*4\r\n$7\r\nEVALSHA\r\n$2\r\nab\r\n$1\r\n1\r\n$1\r\nk\r\n"
    )
    assert pack_command("é") == b"*1\r\n$2\r\n\xc3\xa9\r\n"


def test_the_packed_path_admits_up_to_capacity_in_one_evalsha_each(redis_client, name):
    limiter = RedisRateLimiter(
        RateLimitConfig(max_requests=5, time_window=3600.0), name=name, redis=redis_client
    )
    assert limiter.try_acquire()  # loads the script (a first EVALSHA answers NOSCRIPT)
    before = evalsha_calls(redis_client)
    assert [limiter.try_acquire() for _ in range(6)] == [True] * 4 + [False] * 2
    assert evalsha_calls(redis_client) - before == 6
    assert limiter.try_acquire(tokens=1) is False
    assert 0.0 <= limiter.available_tokens() < 1.0


def test_the_packed_path_reloads_the_script_after_a_flush(redis_client, name):
    limiter = RedisRateLimiter(
        RateLimitConfig(max_requests=3, time_window=3600.0), name=name, redis=redis_client
    )
    assert limiter.try_acquire()
    redis_client.script_flush()
    assert limiter.try_acquire()  # NOSCRIPT: loaded again, sent again, counted once
    assert limiter.try_acquire()
    assert not limiter.try_acquire()
    assert limiter.snapshot()["backend_errors"] == 0


def test_the_packed_path_resumes_after_a_restart(fresh_server: RedisServer, name, fake):
    client = from_url(fresh_server.url)
    limiter = RedisRateLimiter(
        RateLimitConfig(max_requests=1, time_window=3600.0), name=name, redis=client, clock=fake
    )
    assert limiter.try_acquire()
    fresh_server.kill()
    fresh_server.start()
    # The pooled connection is dead: retried once on a fresh one, no error counted.
    assert limiter.try_acquire()  # an empty Redis: a full bucket
    assert not limiter.try_acquire()
    assert limiter.snapshot()["backend_errors"] == 0
    fresh_server.kill()
    assert limiter.try_acquire()  # fail-open while down
    assert limiter.snapshot()["backend_errors"] == 1
    client.close()


def test_threads_on_the_packed_path_never_exceed_the_budget(redis_client, name):
    limiter = RedisRateLimiter(
        RateLimitConfig(max_requests=300, time_window=86400.0), name=name, redis=redis_client
    )
    admitted: list[int] = []

    def run() -> None:
        admitted.append(sum(limiter.try_acquire() for _ in range(150)))

    threads = [threading.Thread(target=run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(admitted) == 300


def test_a_lease_serves_its_batch_in_one_round_trip(redis_client, name, fake):
    limiter = leased(redis_client, name, fake, lease=5)
    assert limiter.try_acquire()  # loads the script, leases 5 and keeps 4
    before = evalsha_calls(redis_client)
    assert all(limiter.try_acquire() for _ in range(14))
    assert evalsha_calls(redis_client) - before == 2
    assert stored_tokens(redis_client, name) == 5.0  # 20 - three batches of 5
    view = limiter.snapshot()
    assert (view["lease"], view["leased_tokens"], view["allowed"]) == (5, 0, 15)


def test_a_lease_takes_what_is_left_when_less_than_a_batch(redis_client, name, fake):
    limiter = leased(redis_client, name, fake, lease=8, max_requests=10)
    assert sum(limiter.try_acquire() for _ in range(12)) == 10
    assert limiter.try_acquire(tokens=3) is False
    assert limiter.retry_after(3) == pytest.approx(0.6)  # 3 tokens at 5 tokens/s
    fake.advance(0.6)
    assert limiter.try_acquire(tokens=3)
    assert limiter.snapshot()["rejected"] == 3


def test_a_request_larger_than_the_lease_uses_what_is_held(redis_client, name, fake):
    limiter = leased(redis_client, name, fake, lease=4)
    assert limiter.try_acquire()  # leases 4, keeps 3
    assert limiter.try_acquire(tokens=6)  # needs 3 more: takes max(4, 6) - 3 = 3
    assert limiter.snapshot()["leased_tokens"] == 0
    assert stored_tokens(redis_client, name) == 13.0


def test_unused_leased_tokens_are_dropped_after_lease_ttl(redis_client, name, fake):
    limiter = RedisRateLimiter(
        RateLimitConfig(max_requests=10, time_window=3600.0),
        name=name,
        redis=redis_client,
        clock=fake,
        time_source=lambda: 1_700_000_000.0,  # the bucket does not refill
        lease=5,
        lease_ttl=2.0,
    )
    assert limiter.try_acquire()  # holds 4
    fake.advance(2.0)
    assert limiter.snapshot()["leased_tokens"] == 0
    # Dropped, not returned: an admission lost, never one gained.
    assert sum(limiter.try_acquire() for _ in range(10)) == 5
    assert limiter.available_tokens() == 0.0


def test_a_lease_fails_open_while_redis_is_down(name, fake):
    client = from_url(f"redis://127.0.0.1:{free_port()}/0", socket_timeout=0.05)
    limiter = leased(client, name, fake, lease=5)
    assert all(limiter.try_acquire() for _ in range(3))
    view = limiter.snapshot()
    assert view["fallback_admitted"] == 3
    assert view["leased_tokens"] == 0
    client.close()


def test_async_checks_are_served_from_the_lease(redis_client, name, fake):
    limiter = leased(redis_client, name, fake, lease=5, max_requests=12)

    async def hammer() -> list[bool]:
        return await asyncio.gather(*(limiter.atry_acquire() for _ in range(30)))

    assert asyncio.run(hammer()).count(True) == 12


def test_threads_in_lease_mode_never_exceed_the_budget(redis_client, name, fake):
    limiter = leased(redis_client, name, fake, lease=7, max_requests=200, time_window=86400.0)
    admitted: list[int] = []

    def run() -> None:
        admitted.append(sum(limiter.try_acquire() for _ in range(100)))

    threads = [threading.Thread(target=run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(admitted) == 200
    assert limiter.snapshot()["leased_tokens"] == 0


@pytest.mark.parametrize(
    ("kwargs", "error", "field"),
    [
        ({"lease": -1}, ConfigValueError, "lease"),
        ({"lease": 21}, ConfigValueError, "lease"),
        ({"lease": True}, ConfigTypeError, "lease"),
        ({"lease": 2.0}, ConfigTypeError, "lease"),
        ({"lease": 2, "lease_ttl": 0}, ConfigValueError, "lease_ttl"),
    ],
)
def test_bad_lease_arguments_are_refused(redis_client, name, kwargs, error, field):
    with pytest.raises(error, match=field):
        RedisRateLimiter(
            RateLimitConfig(max_requests=20, time_window=1.0),
            name=name,
            redis=redis_client,
            **kwargs,
        )


def test_the_packed_path_encodes_keys_as_the_client_does(redis_server, name):
    # A non-ASCII key in a latin-1 client: the packed EVALSHA must address the same bytes as
    # redis-py's own commands (the lease reservation, HGET below).
    client = from_url(redis_server.url, encoding="latin-1")
    limiter = RedisKeyedRateLimiter(
        RateLimitConfig(max_requests=2, time_window=3600.0), name=name, redis=client
    )
    assert limiter.try_acquire("café")
    assert client.hget(limiter.redis_key("café"), "tokens") == b"1"
    client.close()


def test_a_forked_child_does_not_spend_the_parents_leased_tokens(redis_client, name, fake):
    limiter = leased(redis_client, name, fake, lease=5)
    assert limiter.try_acquire()  # the parent holds 4
    assert limiter.snapshot()["leased_tokens"] == 4
    limiter_module._forked()  # what os.register_at_fork runs in a child
    assert limiter.snapshot()["leased_tokens"] == 0
    assert limiter.try_acquire()  # a batch of its own
    assert stored_tokens(redis_client, name) == 10.0  # 20 - the parent's 5 - the child's 5
