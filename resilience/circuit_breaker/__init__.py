"""A three-state circuit breaker (closed, open, half-open) plus two operator states.

A breaker wraps calls to one dependency. After ``failure_threshold`` consecutive
failures (or a failure rate over a sliding window) it opens and rejects calls with
:class:`~resilience.errors.CircuitOpenError` without running them; after ``timeout``
it lets a few trial calls through and closes again when they succeed. Operators can
force it open or disable it. No lock is ever held while the protected call runs.

The package's private modules import in one direction only:
``_window`` and ``_config`` <- ``_fields`` <- ``_core`` <- ``_breaker`` <- ``_decorator``.
"""

from __future__ import annotations

from resilience.circuit_breaker._breaker import (
    BreakerFactory,
    CircuitBreaker,
    CircuitBreakerRegistry,
    circuit_breaker_registry,
)
from resilience.circuit_breaker._config import CircuitBreakerConfig
from resilience.circuit_breaker._core import CircuitState
from resilience.circuit_breaker._decorator import BreakerWrapped, circuit_breaker

__all__ = [
    "BreakerFactory",
    "BreakerWrapped",
    "CircuitBreaker",
    "CircuitBreakerConfig",
    "CircuitBreakerRegistry",
    "CircuitState",
    "circuit_breaker",
    "circuit_breaker_registry",
]
