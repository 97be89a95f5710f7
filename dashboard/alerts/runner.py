"""The background evaluator: one daemon thread per serving process.

Breakers and limiters live in the serving process's memory, so that is where rules
are evaluated. The runtime (:mod:`dashboard.runtime`) starts the thread when the server
starts and ``ALERTS_ENABLED`` is on; never during ``migrate`` or other commands. The
test settings (``tests/settings.py``) turn it off. A server that forks workers starts
the runtime, so the thread, in each worker.

Settings (read from the environment by ``dashboard.settings``): ``ALERTS_ENABLED``
(default true), ``ALERTS_INTERVAL`` (seconds between passes, 5).
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

from django.conf import settings
from django.db import close_old_connections

from dashboard.periodic import PeriodicThread

from .delivery import Notifier
from .engine import Engine, EvaluationReport
from .models import AlertRule, NotificationChannel, RuleKind, Severity

__all__ = ["Runner", "ensure_demo_rules", "get_runner"]

logger = logging.getLogger(__name__)

DEFAULT_INTERVAL = 5.0


def interval() -> float:
    """ALERTS_INTERVAL in seconds (a number, or text settings.py's parser accepts)."""
    value = getattr(settings, "ALERTS_INTERVAL", DEFAULT_INTERVAL)
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return DEFAULT_INTERVAL
    return seconds if seconds > 0 else DEFAULT_INTERVAL


class Runner:
    """Runs ``engine.evaluate_all()`` every ``interval`` seconds on a daemon thread
    (:class:`dashboard.periodic.PeriodicThread`)."""

    def __init__(
        self,
        *,
        engine: Engine | None = None,
        notifier: Notifier | None = None,
        interval: float = 5.0,
    ) -> None:
        self.notifier = notifier or Notifier(background=True)
        self.engine = engine or Engine(notify=lambda alert, event: self.notifier(alert, event))
        self._periodic = PeriodicThread(
            self.tick, interval=interval, name="alert-evaluator", what="alert evaluation pass"
        )
        self._pid = 0
        self._lock = threading.Lock()
        self._seeded = True
        self.last_report: EvaluationReport | None = None
        self.failures = 0

    @property
    def interval(self) -> float:
        return self._periodic.interval

    @property
    def running(self) -> bool:
        return self._periodic.running and self._pid == os.getpid()

    def start(self) -> bool:
        """Start the thread unless it runs in this process; returns True if started."""
        with self._lock:
            if self.running:
                return False
            if self._pid and self._pid != os.getpid():
                # Forked after the first start: the delivery worker did not come along.
                self.notifier = Notifier(background=True)
            self._pid = os.getpid()
            self._seeded = not getattr(settings, "RESILIENCE_DEMO", False)
            return self._periodic.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._periodic.stop(timeout)
        self.notifier.shutdown(timeout)

    def run_once(self) -> EvaluationReport:
        close_old_connections()
        try:
            self.last_report = self.engine.evaluate_all()
            return self.last_report
        finally:
            close_old_connections()

    def tick(self) -> None:
        """One pass as the thread runs it: the demo rules first (once), then
        :meth:`run_once`; a failed pass is counted in ``failures`` and raised."""
        if not self._seeded:  # not before the first wait: apps may still be loading
            self._seeded = True
            try:
                ensure_demo_rules()
            except Exception:
                logger.exception("could not create the demo alert rules")
        try:
            self.run_once()
        except Exception:  # the database is away: logged by the thread, tried next time
            self.failures += 1
            raise


_runner: Runner | None = None
_runner_lock = threading.Lock()


def get_runner() -> Runner:
    """The process's runner, built on first use (building it starts the delivery worker)."""
    global _runner
    with _runner_lock:
        if _runner is None:
            _runner = Runner(interval=interval())
        return _runner


def ensure_demo_rules() -> None:
    """Rules for ``make run``'s demo workload, created once (operators may edit them)."""
    banner, _ = NotificationChannel.objects.get_or_create(
        name="Dashboard banner", defaults={"kind": NotificationChannel.Kind.BANNER}
    )
    demo_rules: list[dict[str, Any]] = [
        {
            "name": "Circuit breaker open",
            "kind": RuleKind.BREAKER_OPEN,
            # Every breaker of the demo's services; the alert webhooks' own are left out.
            "parameters": {"breaker": "*", "exclude": "alerts.*"},
            "severity": Severity.CRITICAL,
            "for_seconds": 0,
            "cooldown_seconds": 30,
        },
        {
            "name": "Rate limiter rejections",
            "kind": RuleKind.LIMITER_REJECTIONS,
            "parameters": {"limiter": "*", "threshold": 30},
            "severity": Severity.WARNING,
            "for_seconds": 10,
            "cooldown_seconds": 120,
        },
    ]
    for values in demo_rules:
        rule, created = AlertRule.objects.get_or_create(name=values.pop("name"), defaults=values)
        if created:
            rule.channels.add(banner)
