"""The fleet: this process reports its breakers and limiters to a dashboard.

One call joins a worker process (a Celery worker, an RQ worker, a plain script) to
the dashboard; every connection starts at the worker, so it works across hosts and
through firewalls::

    import resilience.fleet
    resilience.fleet.connect("https://dash.example.com", token="rdt_...", service="planner")

or, with ``RESILIENCE_DASHBOARD_URL``, ``RESILIENCE_DASHBOARD_TOKEN`` and
``RESILIENCE_SERVICE_NAME`` in the environment, ``resilience.fleet.connect()``.
With ``REDIS_URL`` (or ``connect(redis_url=...)``) the same messages go through the
dashboard's Redis instead (:mod:`resilience.fleet.redis_transport`), and commands are
pushed to the worker as soon as an operator acts.

About once a second a daemon thread reports every breaker and limiter of the
process; breaker transitions are sent as they happen. The dashboard's answer carries
operator commands (reset, force open, disable) which the thread applies and
acknowledges. The worker's own calls never wait for any of it. The protocol is
described in :mod:`resilience.fleet.protocol` and its JSON Schema.

Call :func:`connect` in each process after any fork (for Celery's prefork pool, in
a ``worker_process_init`` handler): a thread does not survive ``fork``, so a forked
child forgets the parent's reporter and reports only once it connects itself.
"""

from __future__ import annotations

import importlib.metadata
import os
import socket
import sys
import threading
import time
import uuid
from pathlib import Path

from resilience.fleet.protocol import (
    PROTOCOL_VERSION,
    REPORT_PATH,
    InstanceInfo,
    Report,
    schema,
    schema_path,
)
from resilience.fleet.reporter import FleetReporter
from resilience.fleet.transport import HttpTransport, PushTransport, Transport, TransportError

__all__ = [
    "PROTOCOL_VERSION",
    "REPORT_PATH",
    "FleetReporter",
    "HttpTransport",
    "InstanceInfo",
    "PushTransport",
    "RedisTransport",
    "Report",
    "Transport",
    "TransportError",
    "connect",
    "current",
    "disconnect",
    "instance_info",
    "library_version",
    "schema",
    "schema_path",
]

ENV_URL = "RESILIENCE_DASHBOARD_URL"
ENV_TOKEN = "RESILIENCE_DASHBOARD_TOKEN"
ENV_SERVICE = "RESILIENCE_SERVICE_NAME"
ENV_REDIS = "REDIS_URL"
MAX_SERVICE = 100

_lock = threading.Lock()
_current: FleetReporter | None = None


def library_version() -> str:
    """The installed version of this library ("unknown" when run from a source tree)."""
    try:
        return importlib.metadata.version("resilience-dashboard")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _default_service() -> str:
    for name in (ENV_SERVICE, "OTEL_SERVICE_NAME"):
        if value := os.environ.get(name, "").strip():
            return value
    return Path(sys.argv[0]).stem if sys.argv and sys.argv[0] else "python"


def instance_info(*, service: str | None = None, started_at: float | None = None) -> InstanceInfo:
    """Who this process is: a fresh random id, the service, host, pid and version.

    Raises:
        ValueError: ``service`` is empty or longer than 100 characters.
    """
    service = _default_service() if service is None else service
    if not isinstance(service, str) or not service.strip() or len(service) > MAX_SERVICE:
        raise ValueError(f"service must be a non-empty str of at most 100 chars, got {service!r}")
    return {
        "id": uuid.uuid4().hex,
        "service": service.strip(),
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "version": library_version(),
        "language": "python",
        "started_at": time.time() if started_at is None else started_at,
    }


def __getattr__(name: str) -> object:
    # RedisTransport needs the optional redis package: imported when asked for.
    if name == "RedisTransport":
        from resilience.fleet.redis_transport import RedisTransport

        return RedisTransport
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def connect(
    url: str | None = None,
    *,
    redis_url: str | None = None,
    token: str | None = None,
    service: str | None = None,
    interval: float = 1.0,
    timeout: float = 2.0,
    max_backoff: float = 10.0,
    max_events: int = 1000,
) -> FleetReporter | None:
    """Start reporting this process to the dashboard at ``url`` (or through Redis).

    The transport: ``redis_url`` given → Redis; else ``url`` given → HTTP; else the
    environment: ``REDIS_URL`` → Redis, then ``RESILIENCE_DASHBOARD_URL`` → HTTP.
    Each other argument left out comes from the environment:
    ``RESILIENCE_DASHBOARD_TOKEN``, ``RESILIENCE_SERVICE_NAME`` (then
    ``OTEL_SERVICE_NAME``, then the script's name). Connecting twice returns the
    reporter already running; :func:`disconnect` first to change the settings.

    Args:
        url: the dashboard's base URL, e.g. ``http://127.0.0.1:8000``.
        redis_url: the dashboard's Redis (``redis://``, ``rediss://``, ``unix://``):
            reports go to its streams and commands are pushed back (no token: who can
            write to that Redis is trusted, so keep it private).
        token: an API token of a user with the ``fleet.report_fleet`` permission (HTTP).
        service: the name this process is grouped under on the Instances page.
        interval: seconds between reports (transitions go out at once).
        timeout: seconds for one HTTP exchange or Redis command.
        max_backoff: the longest pause between retries while the dashboard is down.
        max_events: transitions kept while the dashboard is unreachable.

    Returns:
        The running :class:`FleetReporter`, or None when no URL is given or set in
        the environment (so a worker can call ``connect()`` unconditionally).

    Raises:
        ValueError: the URL is not http(s) (or redis), or an argument is out of range.
    """
    global _current
    if redis_url is None and url is None:
        redis_url = os.environ.get(ENV_REDIS, "").strip() or None
    if redis_url is None:
        url = url or os.environ.get(ENV_URL, "").strip() or None
        if url is None:
            return None
    token = token if token is not None else (os.environ.get(ENV_TOKEN, "").strip() or None)
    with _lock:
        if _current is not None and _current.running:
            return _current
        transport: Transport
        if redis_url is not None:
            from resilience.fleet.redis_transport import RedisTransport

            transport = RedisTransport(redis_url, timeout=timeout)
        else:
            transport = HttpTransport(
                str(url),
                token=token,
                timeout=timeout,
                user_agent=f"resilience-fleet/{library_version()}",
            )
        reporter = FleetReporter(
            transport,
            instance=instance_info(service=service),
            interval=interval,
            max_backoff=max_backoff,
            max_events=max_events,
        )
        _current = reporter.start()
        return reporter


def _forget_after_fork() -> None:
    # A forked child has the parent's reporter but not its thread: stop its listener
    # filling a queue nobody drains, so that connect() in the child starts afresh.
    global _current
    reporter, _current = _current, None
    if reporter is not None:
        reporter._bus.unsubscribe(reporter._on_event)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)


def current() -> FleetReporter | None:
    """The reporter :func:`connect` started, if it is running."""
    reporter = _current
    return reporter if reporter is not None and reporter.running else None


def disconnect(timeout: float = 5.0) -> None:
    """Stop the reporter :func:`connect` started (no error if there is none)."""
    global _current
    with _lock:
        reporter, _current = _current, None
    if reporter is not None:
        reporter.stop(timeout)
