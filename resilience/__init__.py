"""Resilience primitives for multi-agent and workflow systems.

Rate limiter, circuit breaker, state checkpoints and telemetry, framework-free.
"""

from __future__ import annotations

from resilience.errors import (
    CheckpointCorruptedError,
    CheckpointError,
    CheckpointNotFoundError,
    CircuitBreakerError,
    CircuitOpenError,
    ConfigTypeError,
    ConfigValueError,
    RateLimitError,
    ResilienceError,
)

__all__ = [
    "CheckpointCorruptedError",
    "CheckpointError",
    "CheckpointNotFoundError",
    "CircuitBreakerError",
    "CircuitOpenError",
    "ConfigTypeError",
    "ConfigValueError",
    "RateLimitError",
    "ResilienceError",
]
