"""The fleet over Redis, the dashboard's side: consume reports, push commands.

Keys and messages are the protocol's (:mod:`resilience.fleet.protocol`): workers
``XADD`` reports to one stream; every server process reads it in the consumer group
``dashboard`` under a consumer name of its own, so each report is stored by exactly one
server (no double history rows, no double acks) however many run. Commands go to
``resilience:fleet:v1:commands:<instance>``, read by that worker alone; command ids are
idempotent on the worker, so a command pushed twice (at the click, then after a report
while its ack is on the way) is applied once.

Concurrency model: one daemon thread per server process (``fleet-redis``) runs
:meth:`RedisLink.run`: a blocking ``XREADGROUP`` (``block`` seconds), then, for the
batch, the ORM writes of :func:`services.ingest_report` in this thread (Django gives it
its own database connection; stale ones are closed around each batch) — reports with
transitions or acks first, and their Fleet-page push (:func:`live.push`) before the
batch's other reports —, the pushes of the commands waiting for those instances, and one
``XACK``. Checkpoint metadata (a ``checkpoints`` field instead of ``report``) is
recorded in the same pass. :meth:`RedisLink.push` is called from request threads (an
operator's click) too: it only sends one pipeline on the thread-safe client. In cluster
mode the notification of the other servers' pages uses an event loop owned by this
thread (channels-redis keeps its connections per loop, so they are reused). A report
that cannot be parsed is logged and acknowledged (it would fail again); one whose
storage fails is acknowledged too: the next report of that instance is complete again,
and its command acks are repeated by the worker when the command is pushed again. Redis
down: the thread logs once, retries every ``retry`` seconds, and re-creates the group
after a restart (``NOGROUP``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable
from typing import Any

import redis
from channels.layers import get_channel_layer
from django.db import close_old_connections
from redis.exceptions import RedisError, ResponseError

from dashboard import runtime
from resilience.fleet.protocol import (
    REDIS_ANSWER_FIELD,
    REDIS_CHECKPOINTS_FIELD,
    REDIS_GROUP,
    REDIS_REPORT_FIELD,
    REDIS_REPORTS_KEY,
    redis_commands_key,
)

from . import checkpoints, conf, live, services
from .report import ReportIn, parse_report

logger = logging.getLogger(__name__)

COMMANDS_MAXLEN = 100
BATCH = 200


class RedisLink:
    """Reads the fleet's reports from Redis and pushes commands to its workers.

    Args:
        client: a ``redis.Redis`` whose socket timeout exceeds ``block``.
        consumer: this process's name in the consumer group.
        block: seconds one ``XREADGROUP`` waits for reports.
        retry: seconds between attempts while Redis is down.
        notify: tells the Fleet pages that something changed (tests pass a stub).
    """

    def __init__(
        self,
        client: redis.Redis,
        *,
        consumer: str | None = None,
        block: float = 1.0,
        retry: float = 0.5,
        notify: Callable[[set[str]], None] | None = None,
    ) -> None:
        self.client = client
        self.consumer = consumer or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.block = block
        self.retry = retry
        self._notify = notify
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        self._group_ready = False
        self._down = False
        self.reports = 0
        self.rejected = 0
        self.failed = 0
        self.pushed = 0
        self.errors = 0
        self.checkpoints = 0

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> RedisLink:
        """Start the consumer thread (idempotent)."""
        if not self.running:
            self._stopped.clear()
            self._thread = threading.Thread(target=self.run, name="fleet-redis", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread (it finishes its batch) and close the client."""
        self._stopped.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        self.client.close()

    # -- pushing commands (any thread) --------------------------------------------------------

    def push(self, instance_id: str, answer: dict[str, Any]) -> bool:
        """XADD ``answer`` to the instance's command stream; False if Redis failed."""
        key = redis_commands_key(instance_id)
        body = json.dumps(answer, separators=(",", ":")).encode()
        ttl = max(int(conf.command_ttl().total_seconds() * 2), 60)
        try:
            with self.client.pipeline(transaction=False) as pipe:
                pipe.xadd(key, {REDIS_ANSWER_FIELD: body}, maxlen=COMMANDS_MAXLEN, approximate=True)
                pipe.expire(key, ttl)  # a gone worker's stream goes away by itself
                pipe.execute()
        except (RedisError, OSError) as exc:
            self.errors += 1
            logger.warning("fleet: could not push commands to %s: %s", instance_id, exc)
            return False
        self.pushed += 1
        return True

    # -- consuming reports (the link's thread) --------------------------------------------------

    def ensure_group(self) -> None:
        """Create the consumer group (from now on) unless it exists."""
        try:
            self.client.xgroup_create(REDIS_REPORTS_KEY, REDIS_GROUP, id="$", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._group_ready = True

    def read(self, block: float | None = None) -> list[tuple[bytes, dict[bytes, bytes]]]:
        """One ``XREADGROUP`` for this consumer: the new entries (maybe none)."""
        if not self._group_ready:
            self.ensure_group()
        wait = self.block if block is None else block
        try:
            reply: Any = self.client.xreadgroup(
                REDIS_GROUP,
                self.consumer,
                {REDIS_REPORTS_KEY: ">"},
                count=BATCH,
                block=max(1, int(wait * 1000)),
            )
        except ResponseError as exc:
            if "NOGROUP" in str(exc):  # Redis restarted empty, or the key was deleted
                self._group_ready = False
                return []
            raise
        return [entry for _key, entries in reply or [] for entry in entries]

    def process(self, entries: list[tuple[bytes, dict[bytes, bytes]]]) -> int:
        """Store each report, push its instance's waiting commands, XACK, notify.

        Reports carrying transitions or acks are stored first and pushed to the Fleet
        pages at once, ahead of the batch's other (snapshot-only) reports. Entries
        with a ``checkpoints`` field are checkpoint metadata (:mod:`.checkpoints`).
        Returns how many reports were stored.
        """
        if not entries:
            return 0
        urgent: list[ReportIn] = []
        routine: list[ReportIn] = []
        for _entry_id, fields in entries:
            key = REDIS_CHECKPOINTS_FIELD if REDIS_CHECKPOINTS_FIELD.encode() in fields else None
            body = fields.get((key or REDIS_REPORT_FIELD).encode(), b"")
            if len(body) > conf.max_report_bytes():
                self.rejected += 1
                logger.warning("fleet: dropped a Redis message of %d bytes", len(body))
                continue
            if key is not None:
                self.record_checkpoints(body)
                continue
            try:
                report = parse_report(body)
            except ValueError as exc:
                self.rejected += 1
                logger.warning("fleet: dropped a malformed Redis report: %s", exc)
                continue
            routine.append(report)
        # Reports with transitions or acks are stored and pushed first, but never ahead
        # of an older report of the same instance: its snapshot would overwrite theirs.
        last_urgent = {
            report.instance.id: index
            for index, report in enumerate(routine)
            if report.events or report.acks
        }
        urgent = [
            report
            for index, report in enumerate(routine)
            if index <= last_urgent.get(report.instance.id, -1)
        ]
        routine = [
            report
            for index, report in enumerate(routine)
            if index > last_urgent.get(report.instance.id, -1)
        ]
        stored = 0
        for batch in (urgent, routine):
            changed: set[str] = set()
            for report in batch:
                try:
                    answer = services.ingest_report(report=report, transport="redis")
                except Exception:
                    self.failed += 1
                    logger.exception("fleet: storing a Redis report failed")
                    continue
                stored += 1
                if report.events or report.acks:
                    changed |= services.changed_breakers(report)
                if answer["commands"]:
                    self.push(report.instance.id, answer)
            if changed:
                self.notify(changed)
        self.client.xack(REDIS_REPORTS_KEY, REDIS_GROUP, *(entry_id for entry_id, _ in entries))
        self.reports += stored
        return stored

    def record_checkpoints(self, body: bytes) -> bool:
        """Record a ``checkpoints`` message from the stream (owned by its service alone:
        Redis has no token). A refused or malformed one is logged and dropped."""
        try:
            message = checkpoints.parse_message(body)
            checkpoints.record_checkpoints(message=message, transport="redis")
        except (ValueError, checkpoints.CheckpointsRefused) as exc:
            self.rejected += 1
            logger.warning("fleet: dropped checkpoint metadata from Redis: %s", exc)
            return False
        except Exception:
            self.failed += 1
            logger.exception("fleet: storing checkpoint metadata from Redis failed")
            return False
        self.checkpoints += 1
        return True

    def notify(self, names: set[str]) -> None:
        """Push the changed cards to this process's Fleet pages, and (cluster mode)
        tell the other processes' pages through the channel layer."""
        if self._notify is not None:
            self._notify(names)
            return
        live.push(names)
        layer = get_channel_layer()
        if layer is None or not runtime.identity().cluster:
            return
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
        try:
            self._loop.run_until_complete(layer.group_send(live.GROUP, live.message(names)))
        except Exception:
            logger.exception("fleet: could not notify the Fleet pages")

    def run(self) -> None:
        try:
            while not self._stopped.is_set():
                try:
                    entries = self.read()
                    if self._down:
                        self._down = False
                        logger.warning("fleet: Redis reachable again")
                    if entries:
                        close_old_connections()  # this thread's connection, as per request
                        try:
                            self.process(entries)
                        finally:
                            close_old_connections()
                except (RedisError, OSError) as exc:
                    self.errors += 1
                    self._group_ready = False
                    if not self._down:
                        self._down = True
                        logger.warning("fleet: Redis unavailable, retrying: %s", exc)
                    self._stopped.wait(self.retry)
                except Exception:
                    self.errors += 1
                    logger.exception("fleet: the Redis link failed; retrying")
                    self._stopped.wait(self.retry)
        finally:
            if self._loop is not None:
                self._loop.close()
                self._loop = None
