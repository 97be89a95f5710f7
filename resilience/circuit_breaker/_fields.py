"""The breaker core's fields: its slots and their initial values.

:class:`~resilience.circuit_breaker._core.BreakerCore` (the state machine) subclasses
:class:`CoreFields`; this part runs once per breaker, when it is built. The
per-config values are copied into slots so that the hot path reads one slot each
rather than an attribute of the config. See :mod:`resilience.circuit_breaker._core`
for who holds which lock.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from typing import Any

from resilience.circuit_breaker._config import CircuitBreakerConfig
from resilience.circuit_breaker._support import CircuitState, Tally
from resilience.circuit_breaker._window import OutcomeWindow
from resilience.events import Event, Listener

__all__ = ["CoreFields"]


class CoreFields:
    """The slots of a breaker and :meth:`_setup`, which gives them their first values."""

    __slots__ = (
        "__weakref__",
        "_call_timeout",
        "_clock",
        "_config",
        "_failed",
        "_failure_count",
        "_failure_threshold",
        "_failure_types",
        "_generation",
        "_ignored",
        "_ignored_types",
        "_in_flight",
        "_last_failure",
        "_listeners",
        "_local_trials",
        "_lock",
        "_max_trials",
        "_minimum_calls",
        "_name",
        "_open_message",
        "_open_until",
        "_opened_at",
        "_pending",
        "_plain",
        "_publish_lock",
        "_rate_threshold",
        "_rejected",
        "_slow",
        "_slow_limit",
        "_stale",
        "_stale_total",
        "_state",
        "_success_count",
        "_success_threshold",
        "_successful",
        "_timed",
        "_timeout",
        "_wall_clock",
        "_window",
        "listener_errors",
    )

    def _setup(
        self,
        name: str,
        config: CircuitBreakerConfig,
        clock: Callable[[], float],
        wall_clock: Callable[[], float],
    ) -> None:
        self._name = name
        self._config = config
        self._clock = clock
        self._wall_clock = wall_clock
        # Per-config values and flags, precomputed so the hot path reads one slot each.
        self._failure_threshold = config.failure_threshold
        self._success_threshold = config.success_threshold
        self._max_trials = config.half_open_max_calls
        self._timeout = config.timeout_seconds
        self._failure_types = config.failure_exceptions
        self._ignored_types = config.ignored_exceptions
        self._slow_limit = config.slow_call_seconds
        size = config.sliding_window_size
        self._window = None if size is None else OutcomeWindow(size)
        self._minimum_calls = config.minimum_calls or 0
        self._rate_threshold = config.failure_rate_threshold or 0.0
        self._call_timeout = config.call_timeout_seconds
        self._timed = self._slow_limit is not None or self._call_timeout is not None
        self._plain = self._window is None and not self._timed

        self._lock = threading.Lock()
        self._generation = 0
        self._state = CircuitState.CLOSED
        self._failure_count = 0
        self._success_count = 0
        self._in_flight = 0
        self._local_trials = 0  # trials this object admitted in this period
        self._stale: dict[int, int] = {}
        self._stale_total = 0
        self._open_until = 0.0
        self._opened_at: float | None = None
        self._open_message = ""
        self._last_failure: dict[str, Any] | None = None
        self._listeners: tuple[Listener, ...] = ()
        self._pending: deque[Event] = deque()
        self._publish_lock = threading.Lock()
        self.listener_errors = 0
        self._successful = Tally()
        self._failed = Tally()
        self._rejected = Tally()
        self._ignored = Tally()
        self._slow = Tally()
