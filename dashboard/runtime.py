"""The dashboard's runtime: everything process-wide, built from settings at server start.

Nothing runs at import or in an ``AppConfig.ready()``: those only connect signal
receivers. :func:`start` (idempotent) builds a :class:`Runtime` from Django settings
and starts, in this order:

1. cluster mode: with ``REDIS_URL`` the breaker and limiter registries' factories
   become Redis-backed (``resilience.redis.install``), before anything creates one;
2. the /metrics collectors and ``METRICS_APPLICATION``; fresh API and login throttles; the
   Django-backed checkpoint manager as the library's default;
3. the event-bus subscriptions, each for the event types it reads: the breaker recorder
   (history rows), the live broadcaster (websocket pushes), the alert sources
   (breaker-opening counters, checkpoint verification failures);
4. the span pipeline (``TRACES_ENABLED``): database span processor, OTLP/console/zipkin
   exporters, Django instrumentation;
5. the background threads of a serving process: the alert evaluator
   (``ALERTS_ENABLED``), checkpoint retention (``CHECKPOINT_KEEP_LAST``/``_MAX_AGE``),
   the fleet's Redis link (``REDIS_URL``: worker reports and pushed commands), the
   service map's rollup (every 5 s) and the demo load generator (``RESILIENCE_DEMO``).

The live broadcaster and sampler are asyncio tasks: they start on the server's event
loop when the first live page connects (:meth:`Runtime.start_live`), and
:meth:`Runtime.astop` stops them. Over HTTP the fleet's server side is plain requests;
the ingest app keeps counters only (``ingest.stats``).

Who calls :func:`start`: ``dashboard.asgi`` (on ASGI lifespan startup, or on the first
connection under daphne, which has no lifespan), ``manage.py demo`` and
``manage.py run_agents`` (a worker: cluster mode and recording, no server threads).
Tests build one per test (``tests/dashboard/conftest.py``) and stop it afterwards.

Process identity (host, pid) and the cluster flag are computed by :meth:`Runtime.start`,
so they are right in a worker forked after import and under ``override_settings``;
:func:`identity` falls back to computing them now when no runtime runs.

Concurrency: ``start``/``stop`` take the runtime's lock; the module's current runtime
is swapped under ``_lock``. A runtime started in a parent process is rebuilt by
:func:`start` in a forked child (its threads did not come along).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import threading
from dataclasses import dataclass
from typing import Any

from django.conf import settings

from resilience.events import BreakerStateChanged, CheckpointCorrupted, Event

logger = logging.getLogger(__name__)

__all__ = ["Features", "Identity", "Runtime", "current", "identity", "start", "stop"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Identity:
    """Who this process is: set when the runtime starts."""

    host: str
    pid: int
    cluster: bool

    @classmethod
    def now(cls) -> Identity:
        return cls(
            host=socket.gethostname(),
            pid=os.getpid(),
            cluster=bool(getattr(settings, "REDIS_URL", "")),
        )

    @property
    def process(self) -> str:
        """``host:pid``, as breaker history rows record it."""
        return f"{self.host}:{self.pid}"

    @property
    def live_process(self) -> str:
        """``host-pid``, as the live groups and samples name it."""
        return f"{self.host}-{self.pid}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Features:
    """What a runtime starts. :meth:`from_settings` is the server's choice.

    ``traces`` installs the span pipeline (OTLP ingest needs it); ``record_spans`` lets
    the process's own spans into it (tests switch it off outside transactions).
    """

    cluster: bool = False
    record_breakers: bool = True
    live: bool = True
    alert_sources: bool = True
    traces: bool = True
    record_spans: bool = True
    alerts: bool = False
    retention: bool = False
    demo: bool = False
    fleet_redis: bool = False
    service_map: bool = False

    @classmethod
    def from_settings(cls, *, serving: bool = True, **overrides: bool) -> Features:
        """The features settings turn on; ``serving=False`` (a worker) leaves out the
        server's threads (alert evaluator, retention, demo) and the live pushes."""
        from dashboard.checkpoints import retention

        features = cls(
            cluster=bool(getattr(settings, "REDIS_URL", "")),
            traces=bool(getattr(settings, "TRACES_ENABLED", True)),
            live=serving,
            alerts=serving and bool(getattr(settings, "ALERTS_ENABLED", True)),
            retention=serving and retention.policy().active,
            demo=serving and bool(getattr(settings, "RESILIENCE_DEMO", False)),
            fleet_redis=serving and bool(getattr(settings, "REDIS_URL", "")),
            service_map=serving and bool(getattr(settings, "TRACES_ENABLED", True)),
        )
        return dataclasses.replace(features, **overrides)


class Runtime:
    """Owns the process-wide parts of the dashboard; start and stop are idempotent."""

    def __init__(self, features: Features | None = None) -> None:
        self.features = features if features is not None else Features.from_settings()
        self.identity: Identity | None = None
        self._lock = threading.RLock()
        self._stops: list[tuple[str, Any]] = []
        self._listeners: list[Any] = []

    @property
    def started(self) -> bool:
        return self.identity is not None

    def start(self) -> Runtime:
        with self._lock:
            if self.identity is not None:
                return self
            self.identity = Identity.now()
            try:
                self._start(self.features)
            except BaseException:
                self.stop()
                raise
            return self

    def _start(self, f: Features) -> None:
        if f.cluster:
            from dashboard import cluster

            cluster.start()
            self._stops.append(("cluster", cluster.stop))

        from dashboard import login_throttle
        from dashboard.api import collectors, throttle
        from resilience import telemetry

        collectors.register(telemetry.metrics.registry)
        collector = telemetry.metrics.collector
        if collector is not None:
            # resilience4j's Grafana dashboard selects on Micrometer's `application` tag.
            collector.application = getattr(settings, "METRICS_APPLICATION", None) or None
        throttle.reset()
        login_throttle.reset()

        from dashboard.checkpoints import store

        # The workflow engine and API save through the library's default manager.
        store.install()

        if f.record_breakers:
            from dashboard.breakers import recorder

            self._subscribe(recorder.on_event, BreakerStateChanged)
            self._stops.append(("recorder", recorder.flush))
        if f.live:
            from dashboard.live.broadcast import broadcaster

            self._subscribe(broadcaster.on_event, BreakerStateChanged)
        if f.alert_sources:
            from dashboard.alerts import sources

            self._subscribe(sources.on_event, BreakerStateChanged, CheckpointCorrupted)
        if f.traces:
            from dashboard.traces import tracing

            processor = tracing.install()
            if processor is not None:
                processor.enabled = f.record_spans
                self._stops.append(("spans", _disable_spans))
        if f.alerts:
            from dashboard.alerts import runner

            alert_runner = runner.get_runner()
            alert_runner.start()
            self._stops.append(("alert evaluator", alert_runner.stop))
        if f.retention:
            from dashboard.checkpoints import retention

            retention.worker.start(retention.policy().interval)
            self._stops.append(("checkpoint retention", retention.worker.stop))
        if f.fleet_redis:
            from dashboard.fleet import runtime as fleet_runtime

            # Worker reports and pushed commands over Redis (the consumer group).
            fleet_runtime.start()
            self._stops.append(("fleet over Redis", fleet_runtime.stop))
        if f.service_map:
            from dashboard.servicemap.worker import RollupWorker

            rollup = RollupWorker()
            rollup.start()
            self._stops.append(("service map rollup", rollup.stop))
        if f.demo:
            from dashboard import demo

            demo.start()
            self._stops.append(("demo", demo.stop))

    def _subscribe(self, listener: Any, *types: type[Event]) -> None:
        # By type: a rejected call builds no CallRejected event nobody here wants.
        from resilience.events import bus

        bus.subscribe(listener, types=types or None)  # none given: every type
        self._listeners.append(listener)

    def unsubscribe(self) -> None:
        """Detach this runtime's bus listeners (also what a forked child does with the
        runtime it inherited: its threads did not come along, its listeners did)."""
        from resilience.events import bus

        listeners, self._listeners = self._listeners, []
        for listener in listeners:
            bus.unsubscribe(listener)

    def start_live(self) -> None:
        """Start the broadcaster and sampler on the running event loop (no-op if running)."""
        if self.features.live:
            from dashboard.live import runtime as live

            live.ensure_started()

    def stop(self) -> None:
        """Stop what :meth:`start` started, newest first; a second call does nothing."""
        with self._lock:
            stops, self._stops = self._stops, []
            self.identity = None
        self.unsubscribe()
        for name, stop_one in reversed(stops):
            try:
                stop_one()
            except Exception:
                logger.exception("runtime: stopping %s failed", name)

    async def astop(self) -> None:
        """:meth:`stop`, after the live tasks on this event loop."""
        if self.features.live:
            from dashboard.live import runtime as live

            await live.stop()
        self.stop()


def _disable_spans() -> None:
    from dashboard.traces import tracing

    processor = tracing.processor()
    if processor is not None:
        processor.force_flush()
        processor.enabled = False


_lock = threading.Lock()
_current: Runtime | None = None


def current() -> Runtime | None:
    """The started runtime of this process, if any."""
    runtime = _current
    if runtime is None or runtime.identity is None or runtime.identity.pid != os.getpid():
        return None
    return runtime


def start(features: Features | None = None) -> Runtime:
    """Start this process's runtime (built from settings unless ``features`` are given);
    returns the running one if it is already started in this process."""
    global _current
    with _lock:
        runtime = current()
        if runtime is not None:
            return runtime
        if _current is not None:  # started before this process was forked
            _current.unsubscribe()
        _current = Runtime(features).start()
        return _current


def stop() -> None:
    """Stop this process's runtime (no-op when none runs)."""
    global _current
    with _lock:
        runtime, _current = _current, None
    if runtime is not None:
        runtime.stop()


def identity() -> Identity:
    """The running runtime's identity, or this process's as of now."""
    runtime = current()
    if runtime is not None and runtime.identity is not None:
        return runtime.identity
    return Identity.now()
