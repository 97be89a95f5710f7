"""The Redis side of both Redis limiters: key encoding, scripts, packed commands, fallback.

Private: the public classes are in :mod:`resilience.redis.limiter` and
:mod:`resilience.redis.keyed_limiter`.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Awaitable, Callable, Hashable
from typing import Any

from resilience.errors import ConfigTypeError, RateLimitError
from resilience.rate_limiter._core import MIN_SLEEP, RateLimitConfig
from resilience.redis._client import UNAVAILABLE, Backend, check_client, check_tag
from resilience.redis.scripts import TOKEN_BUCKET, TOKEN_LEASE

__all__ = ["DEFAULT_PREFIX", "Bucket", "await_tokens", "encode_key"]

DEFAULT_PREFIX = "resilience:rl:"


def encode_key(key: Hashable) -> str:
    """A type-tagged text for ``key``: keys that are equal in a dict (as in the in-memory
    :class:`~resilience.rate_limiter.KeyedRateLimiter`) get one text, others differ.

    ``1``, ``1.0`` and ``True`` are one key (``"i:1"``), ``"1"`` another (``"s:1"``),
    ``b"1"`` a third (``"b:31"``); tuples are encoded item by item, frozensets too,
    sorted (so every process, whatever its hash seed, gets the same text).
    """
    if isinstance(key, str):
        return f"s:{key}"
    if isinstance(key, int):
        return f"i:{int(key)}"
    if isinstance(key, float):
        return f"i:{int(key)}" if key.is_integer() else f"f:{key!r}"
    if isinstance(key, bytes):
        return f"b:{key.hex()}"
    if isinstance(key, tuple):
        return "t:" + json.dumps([encode_key(item) for item in key], separators=(",", ":"))
    if isinstance(key, frozenset):  # sorted: iteration order depends on the hash seed
        return "z:" + json.dumps(sorted(encode_key(item) for item in key), separators=(",", ":"))
    kind = type(key)
    return f"o:{kind.__module__}.{kind.__qualname__}:{key!r}"


class Bucket:
    """The Redis side shared by both limiters: script, key layout, fallback policy."""

    __slots__ = (
        "args",
        "backend",
        "capacity",
        "fail_open",
        "fallback_admitted",
        "fallback_rejected",
        "lease_script",
        "packed",
        "prefix",
        "rate",
        "script",
        "time_source",
    )

    def __init__(
        self,
        config: RateLimitConfig,
        *,
        kind: str,
        name: str,
        client: object,
        key_prefix: str,
        fail_open: bool,
        retry_interval: float,
        clock: Callable[[], float],
        time_source: Callable[[], float] | None,
    ) -> None:
        if not isinstance(key_prefix, str):
            raise ConfigTypeError(f"key_prefix must be a str, got {key_prefix!r}")
        if not isinstance(fail_open, bool):
            raise ConfigTypeError(f"fail_open must be a bool, got {fail_open!r}")
        if time_source is not None and not callable(time_source):
            raise ConfigTypeError(f"time_source must be callable or None, got {time_source!r}")
        check_tag("name", name)
        self.backend = Backend(
            check_client(client, what=f"{kind} {name!r}"),
            what=f"{kind} {name!r}",
            retry_interval=retry_interval,
            clock=clock,
        )
        self.script = self.backend.register(TOKEN_BUCKET)
        self.lease_script = self.backend.register(TOKEN_LEASE)
        # Commands packed once: (key, requested) -> RESP bytes (bounded; see _packed).
        self.packed: dict[tuple[str, int], bytes] = {}
        self.prefix = f"{key_prefix}{{{name}}}"
        self.capacity = float(config.capacity)
        self.rate = config.rate
        # An idle bucket is full again after capacity / rate seconds; keep it 1 s longer.
        ttl_ms = math.ceil(config.capacity / config.rate * 1000) + 1000
        self.args = (str(config.capacity), repr(config.rate), ttl_ms)
        self.fail_open = fail_open
        self.fallback_admitted = 0
        self.fallback_rejected = 0
        self.time_source = time_source

    def _packed(self, key: str, requested: int) -> bytes:
        packed = self.packed.get((key, requested))
        if packed is None:
            capacity, rate, ttl = self.args
            sha = self.script.sha
            packed = self.backend.pack("EVALSHA", sha, 1, key, capacity, rate, requested, ttl)
            if len(self.packed) >= 256:  # a keyed limiter sees unboundedly many keys
                self.packed.clear()
            self.packed[(key, requested)] = packed
        return packed

    def check(self, key: str, requested: int) -> tuple[bool, float] | None:
        """``(admitted, level after)`` from Redis, or None when Redis cannot answer."""
        if self.time_source is None:
            reply = self.backend.run_packed(self.script, self._packed(key, requested))
        else:
            capacity, rate, ttl = self.args
            now = f"{self.time_source() * 1e6:.0f}"
            reply = self.backend.run(self.script, (key,), (capacity, rate, requested, ttl, now))
        if reply is UNAVAILABLE:
            return None
        admitted, level = reply
        return bool(admitted), float(level)

    def reserve(self, key: str, need: int, want: int) -> tuple[int, float] | None:
        """Take ``want`` tokens, or as many whole tokens as there are if at least ``need``:
        ``(taken, level after)``, or None when Redis cannot answer."""
        capacity, rate, ttl = self.args
        now = "" if self.time_source is None else f"{self.time_source() * 1e6:.0f}"
        reply = self.backend.run(self.lease_script, (key,), (capacity, rate, need, want, ttl, now))
        if reply is UNAVAILABLE:
            return None
        taken, level = reply
        return int(taken), float(level)

    def take(self, key: str, count: int) -> float:
        """0.0 if ``count`` tokens were taken (or admitted by the fallback), else the wait."""
        result = self.check(key, count)
        if result is None:
            if self.fail_open:
                self.fallback_admitted += 1
                return 0.0
            self.fallback_rejected += 1
            return self.backend.retry_interval
        admitted, level = result
        return 0.0 if admitted else (count - level) / self.rate

    def level(self, key: str) -> float:
        """Tokens in ``key``'s bucket; with Redis down, capacity if failing open, else 0."""
        result = self.check(key, 0)
        if result is None:
            return self.capacity if self.fail_open else 0.0
        return result[1]

    def describe(self) -> dict[str, Any]:
        return {
            **self.backend.describe(),
            "key_prefix": self.prefix,
            "fail_open": self.fail_open,
            "fallback_admitted": self.fallback_admitted,
            "fallback_rejected": self.fallback_rejected,
        }


async def await_tokens(
    take: Callable[[], float],
    clock: Callable[[], float],
    async_sleep: Callable[[float], Awaitable[object]],
    timeout: float | None,  # noqa: ASYNC109 (a deadline checked before sleeping)
    refuse: Callable[[float], RateLimitError],
) -> None:
    """``resilience.rate_limiter._core.await_for`` with ``take`` run in a worker thread."""
    deadline = None if timeout is None else clock() + timeout
    while True:
        wait = await asyncio.to_thread(take)
        if not wait:
            return
        if deadline is not None and clock() + wait > deadline:
            raise refuse(wait)
        await async_sleep(wait if wait > MIN_SLEEP else MIN_SLEEP)
