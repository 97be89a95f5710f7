"""One pub/sub connection and thread per Redis client, for its shared breakers.

Private. The thread subscribes to each breaker's channel, hands every message to
its breaker, and re-reads every breaker's state from Redis after (re)subscribing
and every ``resync_interval`` seconds (a safety net for messages published while it
was disconnected). When Redis goes away it retries every ``retry_interval``
seconds, then re-subscribes and resynchronises: nothing to do by hand.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import uuid
from typing import TYPE_CHECKING, Any, Protocol

import redis
from redis.exceptions import RedisError

from resilience.redis._client import Backend

if TYPE_CHECKING:
    from collections.abc import Callable

    from redis.client import PubSub

__all__ = ["Hub", "hub_for"]

logger = logging.getLogger("resilience.redis")


class Subscriber(Protocol):
    """What the hub needs from a breaker."""

    @property
    def channel(self) -> str: ...

    def resync(self) -> None: ...

    @property
    def needs_resync(self) -> bool: ...

    def forked(self) -> None: ...

    def observe(self, payload: bytes | str) -> None: ...


class Hub:
    """Delivers pub/sub messages of one Redis client to its breakers (see module doc)."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        retry_interval: float = 0.25,
        resync_interval: float = 5.0,
        poll: float = 0.05,
    ) -> None:
        self.client = client
        self.retry_interval = retry_interval
        self.resync_interval = resync_interval
        self.poll = poll
        self.connected = threading.Event()
        self.backend = Backend(client, what="Redis breaker pub/sub", retry_interval=retry_interval)
        self._subscribers: dict[str, Subscriber] = {}
        self._changed = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def add(self, subscriber: Subscriber) -> None:
        """Deliver ``subscriber.channel``'s messages to it; starts the thread if needed."""
        with self._lock:
            self._subscribers[subscriber.channel] = subscriber
            self._changed.set()
            self._start()

    def remove(self, subscriber: Subscriber) -> None:
        """Stop delivering to ``subscriber``; the thread ends with the last one."""
        with self._lock:
            if self._subscribers.get(subscriber.channel) is subscriber:
                del self._subscribers[subscriber.channel]
                self._changed.set()
            empty = not self._subscribers
        if empty:
            self.stop()

    def stop(self, timeout: float = 2.0) -> None:
        """Stop the thread and wait for it; ``add`` starts a new one."""
        with self._lock:
            thread, self._thread = self._thread, None
            self._stop.set()
            self._stop = threading.Event()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        self.connected.clear()

    def after_fork(self) -> None:
        """In a forked child: the thread is gone and its locks may be held; start again."""
        self._lock = threading.Lock()
        self._thread = None
        self._stop = threading.Event()
        self.connected = threading.Event()
        self._changed.set()
        for subscriber in self._subscribers.values():
            subscriber.forked()
        if self._subscribers:
            self._start()

    def _start(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(
                target=self._run, args=(self._stop,), name="resilience-redis-pubsub", daemon=True
            )
            self._thread.start()

    def _run(self, stop: threading.Event) -> None:
        # redis-py < 8 leaves ``pubsub()`` untyped, 8 types it: a declared callable
        # type-checks on both without an ignore that one of them calls unused.
        new_pubsub: Callable[..., PubSub] = self.client.pubsub
        while not stop.is_set():
            pubsub = new_pubsub(ignore_subscribe_messages=True)
            try:
                self._serve(pubsub, stop)
            except (RedisError, OSError) as exc:
                self.connected.clear()
                self.backend.failed(exc)
                stop.wait(self.retry_interval)
            except Exception:  # a bug must not kill the thread for good
                self.connected.clear()
                logger.exception("Redis breaker pub/sub thread failed; restarting it")
                stop.wait(self.retry_interval)
            finally:
                with contextlib.suppress(Exception):
                    pubsub.close()

    def _serve(self, pubsub: PubSub, stop: threading.Event) -> None:
        subscribed: set[str] = set()
        # Every channel is new on a new connection, and new channels are resynced.
        next_resync = time.monotonic() + self.resync_interval
        self._changed.set()  # a new connection subscribes to every channel
        while not stop.is_set():
            if not self.connected.is_set():
                pubsub.ping()  # proves the connection before claiming it works
                self.backend.recovered()
                self.connected.set()
            if self._changed.is_set():
                self._changed.clear()
                with self._lock:
                    wanted = dict(self._subscribers)
                gone = subscribed - wanted.keys()
                if gone:
                    pubsub.unsubscribe(*gone)  # type: ignore[no-untyped-call]
                new = [channel for channel in wanted if channel not in subscribed]
                if new:
                    # Subscribe, wait until Redis has done it, then read the state: no
                    # change can fall in between.
                    pubsub.subscribe(*new)
                    subscribed.update(new)
                    self._sync_point(pubsub)
                    for channel in new:
                        wanted[channel].resync()
                subscribed -= gone
            with self._lock:
                everyone = list(self._subscribers.values())
            if time.monotonic() >= next_resync:
                next_resync = time.monotonic() + self.resync_interval
                for subscriber in everyone:
                    subscriber.resync()
            else:
                # An idle breaker whose Redis failed learns here that it is back.
                for subscriber in everyone:
                    if subscriber.needs_resync:
                        subscriber.resync()
            message: dict[str, Any] | None = pubsub.get_message(timeout=self.poll)
            if message is not None and message.get("type") == "message":
                self._dispatch(message)

    def _sync_point(self, pubsub: PubSub, timeout: float = 2.0) -> None:
        """Return once Redis has handled the commands sent so far on ``pubsub``.

        Redis answers a connection's commands in order, so once the reply to a PING
        sent after SUBSCRIBE is back, the subscription is active. Messages read
        meanwhile are dispatched. On timeout it returns anyway (the periodic resync
        covers what it might miss).
        """
        token = uuid.uuid4().hex
        pubsub.ping(token)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            message: dict[str, Any] | None = pubsub.get_message(timeout=self.poll)
            if message is None:
                continue
            kind, data = message.get("type"), message.get("data")
            if kind == "pong" and data in (token, token.encode()):
                return
            if kind == "message":
                self._dispatch(message)

    def _dispatch(self, message: dict[str, Any]) -> None:
        channel = message["channel"]
        if isinstance(channel, bytes):
            channel = channel.decode()
        subscriber = self._subscribers.get(channel)
        if subscriber is not None:
            try:
                subscriber.observe(message["data"])
            except Exception:
                logger.exception("Redis breaker message on %r could not be applied", channel)


_hubs: dict[int, Hub] = {}
_hubs_lock = threading.Lock()


def hub_for(client: redis.Redis) -> Hub:
    """The hub of ``client`` (one per client object, created on first use)."""
    with _hubs_lock:
        hub = _hubs.get(id(client))
        if hub is None or hub.client is not client:
            hub = _hubs[id(client)] = Hub(client)
        return hub


def _after_fork_in_child() -> None:
    global _hubs_lock
    _hubs_lock = threading.Lock()
    for hub in list(_hubs.values()):
        hub.after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
