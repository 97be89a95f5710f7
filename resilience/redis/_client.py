"""Connecting to Redis, and living through its outages.

Private: import :func:`from_url` from :mod:`resilience.redis`.

Every Redis-backed primitive talks to Redis through a :class:`Backend`: it runs a
Lua script and returns its reply, or :data:`UNAVAILABLE` when Redis cannot answer.
No exception from the backend reaches the caller. After a failure the backend
stops trying for ``retry_interval`` seconds, so a dead or unreachable Redis costs
callers one short socket timeout per interval, not one per call; warnings are
logged at most once per ``log_interval``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Final

import redis
from redis.backoff import NoBackoff
from redis.commands.core import Script
from redis.retry import Retry

from resilience._validate import duration, positive
from resilience.errors import ConfigTypeError, ConfigValueError

__all__ = [
    "UNAVAILABLE",
    "Backend",
    "pack_command",
    "check_client",
    "check_tag",
    "default_client",
    "from_url",
]

logger = logging.getLogger("resilience.redis")

DEFAULT_SOCKET_TIMEOUT: Final = 0.1
"""Seconds a command may wait for Redis before the backend counts it as down."""


class _Unavailable:
    """The type of :data:`UNAVAILABLE`."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "UNAVAILABLE"


UNAVAILABLE: Final = _Unavailable()
"""What :meth:`Backend.run` returns instead of a reply when Redis cannot answer."""


def from_url(
    url: str | None = None,
    *,
    socket_timeout: float = DEFAULT_SOCKET_TIMEOUT,
    connect_timeout: float | None = None,
    **kwargs: Any,
) -> redis.Redis:
    """A Redis client for ``url`` with short timeouts; nothing connects until first use.

    Args:
        url: ``redis://``, ``rediss://`` or ``unix://`` URL; default: the ``REDIS_URL``
            environment variable.
        socket_timeout: seconds a command may take (a dead Redis must not stall
            callers); default 0.1.
        connect_timeout: seconds a connection attempt may take; default
            ``socket_timeout``.
        **kwargs: passed on to ``redis.Redis.from_url``.

    Returns:
        A ``redis.Redis`` that retries a failed command once, at once, on a fresh
        connection (after a Redis restart the pooled connections are dead).

    Raises:
        ConfigValueError: no URL given and ``REDIS_URL`` is unset or empty, or a
            timeout is not > 0.
    """
    if url is None:
        url = os.environ.get("REDIS_URL", "")
    if not isinstance(url, str):
        raise ConfigTypeError(f"url must be a str, got {url!r}")
    if not url:
        raise ConfigValueError("no Redis URL: pass url= or set the REDIS_URL environment variable")
    timeout = positive("socket_timeout", socket_timeout)
    connect = timeout if connect_timeout is None else positive("connect_timeout", connect_timeout)
    kwargs.setdefault("retry", Retry(NoBackoff(), 1))
    client: redis.Redis = redis.Redis.from_url(
        url, socket_timeout=timeout, socket_connect_timeout=connect, **kwargs
    )
    return client


_defaults: dict[str, redis.Redis] = {}
_defaults_lock = threading.Lock()


def default_client() -> redis.Redis:
    """One shared :func:`from_url` client per ``REDIS_URL`` value (one pool, one
    pub/sub thread for every primitive built without ``redis=``)."""
    url = os.environ.get("REDIS_URL", "")
    with _defaults_lock:
        client = _defaults.get(url)
        if client is None:
            client = _defaults[url] = from_url(url or None)
        return client


def pack_command(*args: str | int, encoding: str = "utf-8") -> bytes:
    """One Redis command in RESP, to pack once and send many times (:meth:`Backend.run_packed`).

    ``encoding``: the client's (:meth:`Backend.pack` passes it), so a key is the same bytes
    as when redis-py sends it.
    """
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = str(arg).encode(encoding)
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


def check_client(client: object, *, what: str) -> redis.Redis:
    """``client`` if it is a ``redis.Redis``; :func:`default_client` if it is None."""
    if client is None:
        return default_client()
    if not isinstance(client, redis.Redis):
        raise ConfigTypeError(
            f"redis must be a redis.Redis client or None for {what}, got {client!r}"
        )
    return client


def check_tag(field: str, value: object) -> str:
    """A non-empty str usable inside a Redis Cluster hash tag (no braces)."""
    if not isinstance(value, str):
        raise ConfigTypeError(f"{field} must be a str, got {value!r}")
    if not value:
        raise ConfigValueError(f"{field} must not be empty, got {value!r}")
    if "{" in value or "}" in value:
        raise ConfigValueError(
            f"{field} must not contain '{{' or '}}' (it becomes a Redis hash tag), got {value!r}"
        )
    return value


class Backend:
    """One primitive's line to Redis: runs scripts, absorbs errors, backs off, logs.

    Args:
        client: the Redis client.
        what: how log messages name the primitive (``"rate limiter 'api'"``).
        retry_interval: seconds to stop trying after a failure (> 0).
        log_interval: seconds between two warnings about the same outage (>= 0).
        clock: monotonic seconds.
        on_recover: called (outside any lock) by the first successful command after
            a failure; an exception it raises is logged, never propagated.

    Attributes:
        errors: commands that failed so far.
        last_error: ``"ExceptionType: message"`` of the latest failure, or None.
    """

    __slots__ = (
        "_clock",
        "_down",
        "_down_until",
        "_log_interval",
        "_next_log",
        "_suppressed",
        "client",
        "errors",
        "last_error",
        "on_recover",
        "retry_interval",
        "what",
    )

    def __init__(
        self,
        client: redis.Redis,
        *,
        what: str,
        retry_interval: float = 1.0,
        log_interval: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        on_recover: Callable[[], object] | None = None,
    ) -> None:
        self.client = client
        self.what = what
        self.retry_interval = duration("retry_interval", retry_interval, allow_zero=False)
        self._log_interval = duration("log_interval", log_interval)
        self._clock = clock
        self.on_recover = on_recover
        self.errors = 0
        self.last_error: str | None = None
        self._down = False
        self._down_until = 0.0
        self._next_log = 0.0
        self._suppressed = 0

    @property
    def available(self) -> bool:
        """False while backing off after a failure (no command is sent then)."""
        return not self._down or self._clock() >= self._down_until

    @property
    def down(self) -> bool:
        """True from a failure until the next successful command."""
        return self._down

    def register(self, text: str) -> Script:
        """A script object for ``text`` (EVALSHA, reloaded on NOSCRIPT after a restart)."""
        return self.client.register_script(text)

    def run(
        self, script: Script, keys: Sequence[str], args: Sequence[Any], *, force: bool = False
    ) -> Any:
        """Run ``script``; its reply, or :data:`UNAVAILABLE` (never raises).

        ``force`` tries even while backing off (the pub/sub thread knows Redis is back).
        """
        if self._down and not force and self._clock() < self._down_until:
            return UNAVAILABLE
        try:
            reply = script(keys=keys, args=args, client=self.client)
        except Exception as exc:  # RedisError, OSError, or a closed client's ValueError
            self.failed(exc)
            return UNAVAILABLE
        if self._down:
            self.recovered()
        return reply

    def pack(self, *args: str | int) -> bytes:
        """:func:`pack_command` with the client's encoding."""
        encoding = self.client.connection_pool.connection_kwargs.get("encoding", "utf-8")
        return pack_command(*args, encoding=encoding)

    def run_packed(self, script: Script, packed: bytes) -> Any:
        """Send ``packed`` (an EVALSHA of ``script``); its reply, or :data:`UNAVAILABLE`.

        :meth:`run` with less work per call, for the limiter's hot path: the caller packs
        the command once (:func:`pack_command`); it is written and its reply read (by
        the hiredis parser when installed) directly on a pooled connection, skipping
        redis-py's per-command packing and dispatch (about a third of a loopback round
        trip). The pool hands each thread its own connection and grows to the number of
        threads calling at once. NOSCRIPT (Redis restarted or flushed its scripts) loads
        the script and sends again; a dropped connection is retried once on a fresh one,
        as the client's ``Retry`` does (not a timeout: the script may have run).
        """
        if self._down and self._clock() < self._down_until:
            return UNAVAILABLE
        try:
            reply = self._send_packed(script, packed)
        except Exception as exc:  # RedisError, OSError, or a closed client's ValueError
            self.failed(exc)
            return UNAVAILABLE
        if self._down:
            self.recovered()
        return reply

    def _send_packed(self, script: Script, packed: bytes) -> Any:
        pool = self.client.connection_pool
        retried = False
        while True:
            conn = pool.get_connection()
            try:
                conn.send_packed_command((packed,))  # type: ignore[no-untyped-call]
                try:
                    return conn.read_response()
                except redis.exceptions.NoScriptError:
                    self.client.script_load(script.script)
                    conn.send_packed_command((packed,))  # type: ignore[no-untyped-call]
                    return conn.read_response()
            except redis.exceptions.TimeoutError:
                conn.disconnect()  # type: ignore[no-untyped-call]
                raise
            except redis.exceptions.ConnectionError:
                conn.disconnect()  # type: ignore[no-untyped-call]
                if retried:
                    raise
                retried = True
            finally:
                pool.release(conn)

    def failed(self, exc: BaseException) -> None:
        """Count a failure, back off for ``retry_interval``, log if not logged lately."""
        now = self._clock()
        self.errors += 1
        self.last_error = f"{type(exc).__name__}: {exc}"
        self._down = True
        self._down_until = now + self.retry_interval
        if now >= self._next_log:
            self._next_log = now + self._log_interval
            extra = f" ({self._suppressed} more errors not logged)" if self._suppressed else ""
            logger.warning(
                "%s: Redis unavailable, using the fallback: %s%s", self.what, self.last_error, extra
            )
            self._suppressed = 0
        else:
            self._suppressed += 1

    def recovered(self) -> None:
        """Leave the outage state (called after a successful command)."""
        if not self._down:
            return
        self._down = False
        self._next_log = 0.0
        logger.warning("%s: Redis reachable again after %d errors", self.what, self.errors)
        callback = self.on_recover
        if callback is not None:
            try:
                callback()
            except Exception:
                logger.exception("%s: resynchronising with Redis failed", self.what)

    def describe(self) -> dict[str, Any]:
        """Backend fields for snapshots."""
        return {
            "backend": "redis",
            "backend_available": not self._down,
            "backend_errors": self.errors,
            "backend_last_error": self.last_error,
        }
