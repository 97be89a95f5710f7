"""Reports and commands through Redis streams instead of HTTP (``REDIS_URL``).

The messages are the protocol's (:mod:`resilience.fleet.protocol`, which names the
keys). :meth:`RedisTransport.send` appends a report to the reports stream and returns
an empty answer: commands do not ride on answers here, they are *pushed*.
:meth:`RedisTransport.receive` blocks on this instance's command stream and returns the
answers that arrived, so a command reaches the worker within a Redis round trip.

Concurrency model: ``send`` runs on the reporter thread and ``receive`` on the
reporter's listener thread (see :class:`~resilience.fleet.reporter.FleetReporter`);
each has its own client (its own connection pool), so a blocking read never holds
the connection a report needs, and each has a socket timeout: a Redis that is down or
hung costs those threads a timeout and a back-off, never the worker's calls. The only
state, the id of the last command entry read, belongs to the listener thread. redis-py
reconnects on the next command after Redis returns; a Redis restarted empty starts its
stream ids from its clock, so they stay above the last id read.
"""

from __future__ import annotations

import json
import logging
from typing import Any
from urllib.parse import urlsplit

import redis
from redis.exceptions import RedisError

from resilience.fleet.protocol import (
    REDIS_ANSWER_FIELD,
    REDIS_CHECKPOINTS_FIELD,
    REDIS_REPORT_FIELD,
    REDIS_REPORTS_KEY,
    REDIS_REPORTS_MAXLEN,
    redis_commands_key,
)
from resilience.fleet.transport import MAX_ANSWER_BYTES, TransportError
from resilience.redis import from_url

__all__ = ["RedisTransport"]

logger = logging.getLogger(__name__)

MAX_ENTRIES = 100


class RedisTransport:
    """Send reports to, and receive commands from, the dashboard through Redis.

    Args:
        url: ``redis://``, ``rediss://`` or ``unix://`` URL of the dashboard's Redis.
        timeout: seconds one Redis command may take (connecting included).
        client: a ``redis.Redis`` for sending (tests); the blocking reads always use a
            client of their own built from ``url``.
        field: the stream entry's field for what :meth:`send` sends: ``report``
            (reports), or ``checkpoints`` (checkpoint metadata, see
            :mod:`resilience.fleet.checkpoints`).

    Raises:
        ValueError: ``timeout`` is not positive or the URL is unusable.
    """

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 2.0,
        client: redis.Redis | None = None,
        field: str = REDIS_REPORT_FIELD,
    ):
        if field not in (REDIS_REPORT_FIELD, REDIS_CHECKPOINTS_FIELD):
            raise ValueError(
                f"field must be {REDIS_REPORT_FIELD!r} or {REDIS_CHECKPOINTS_FIELD!r}, "
                f"got {field!r}"
            )
        if not (isinstance(timeout, int | float) and timeout > 0):
            raise ValueError(f"timeout must be > 0, got {timeout!r}")
        if not isinstance(url, str) or not url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(
                f"redis url must start with redis://, rediss:// or unix://, got {url!r}"
            )
        self.url = url
        self.field = field
        self.timeout = float(timeout)
        self._client = client if client is not None else from_url(url, socket_timeout=timeout)
        self._listener: redis.Redis | None = None
        self._listener_wait = 0.0
        self._last_id = "0-0"

    def __repr__(self) -> str:
        parts = urlsplit(self.url)  # shown without the password
        if not parts.hostname:
            return f"<RedisTransport {parts.scheme}://{parts.path}>"
        port = f":{parts.port}" if parts.port else ""
        return f"<RedisTransport {parts.scheme}://{parts.hostname}{port}{parts.path}>"

    def send(self, body: bytes) -> dict[str, Any]:
        """XADD ``body`` to the reports stream (under ``field``); returns an empty answer.

        Raises:
            TransportError: Redis is unreachable or refused the command.
        """
        try:
            self._client.xadd(
                REDIS_REPORTS_KEY,
                {self.field: body},
                maxlen=REDIS_REPORTS_MAXLEN,
                approximate=True,
            )
        except (RedisError, OSError, ValueError) as exc:
            raise TransportError(f"redis unreachable: {exc}") from exc
        return {}

    def _listen_client(self, wait: float) -> redis.Redis:
        if self._listener is None or self._listener_wait != wait:
            if self._listener is not None:
                self._listener.close()
            # A blocking read waits ``wait`` seconds for an answer: the socket's longer.
            self._listener = from_url(self.url, socket_timeout=wait + self.timeout)
            self._listener_wait = wait
        return self._listener

    def receive(self, instance_id: str, wait: float) -> list[dict[str, Any]]:
        """The answers pushed to ``instance_id`` since the last call, waiting up to
        ``wait`` seconds for one (an empty list when none came).

        Raises:
            TransportError: Redis is unreachable or refused the command.
        """
        key = redis_commands_key(instance_id)
        try:
            reply: Any = self._listen_client(wait).xread(
                {key: self._last_id}, count=MAX_ENTRIES, block=max(1, int(wait * 1000))
            )
        except (RedisError, OSError, ValueError) as exc:
            raise TransportError(f"redis unreachable: {exc}") from exc
        answers: list[dict[str, Any]] = []
        for _stream, entries in reply or []:
            for entry_id, fields in entries:
                self._last_id = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
                answer = _answer(fields)
                if answer is not None:
                    answers.append(answer)
        return answers

    def close(self) -> None:
        """Close the connections (the transport reconnects if used again)."""
        self._client.close()
        if self._listener is not None:
            self._listener.close()


def _answer(fields: dict[Any, Any]) -> dict[str, Any] | None:
    raw = fields.get(REDIS_ANSWER_FIELD.encode(), fields.get(REDIS_ANSWER_FIELD))
    if isinstance(raw, str):
        raw = raw.encode()
    if not isinstance(raw, bytes) or len(raw) > MAX_ANSWER_BYTES:
        logger.warning("fleet: ignoring a command entry without a usable answer field")
        return None
    try:
        answer = json.loads(raw)
    except ValueError:
        logger.warning("fleet: ignoring a command entry that is not JSON: %r", raw[:100])
        return None
    if not isinstance(answer, dict):
        logger.warning("fleet: ignoring a command entry that is not an object: %r", raw[:100])
        return None
    return answer
