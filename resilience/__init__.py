"""Resilience primitives for multi-agent and workflow systems.

Rate limiter, circuit breaker, state checkpoints and telemetry, framework-free::

    from resilience import (
        CircuitBreakerConfig, RateLimitConfig, circuit_breaker, rate_limit,
        checkpoint_manager, telemetry,
    )
"""

from __future__ import annotations

from resilience import telemetry
from resilience.checkpoint import (
    AutoCheckpointer,
    BlobStore,
    CheckpointRecord,
    CheckpointStore,
    CleanupResult,
    CompositeCheckpointStore,
    LocalCheckpointStore,
    MetadataIndex,
    RebuildResult,
    SqliteCheckpointStore,
    StateCheckpointManager,
    checkpoint_manager,
    get_default_checkpoint_manager,
    set_default_checkpoint_manager,
)
from resilience.circuit_breaker import (
    BreakerFactory,
    CircuitBreaker,
    CircuitBreakerConfig,
    CircuitBreakerRegistry,
    CircuitState,
    circuit_breaker,
    circuit_breaker_registry,
)
from resilience.errors import (
    CallTimeoutError,
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
from resilience.events import bus
from resilience.rate_limiter import (
    KeyedLimiterFactory,
    KeyedRateLimiter,
    LimiterFactory,
    RateLimitConfig,
    RateLimiter,
    rate_limit,
    rate_limiter_registry,
)

__all__ = [
    "AutoCheckpointer",
    "BlobStore",
    "BreakerFactory",
    "CallTimeoutError",
    "CheckpointCorruptedError",
    "CheckpointError",
    "CheckpointNotFoundError",
    "CheckpointRecord",
    "CheckpointStore",
    "CircuitBreaker",
    "CircuitBreakerConfig",
    "CircuitBreakerError",
    "CircuitBreakerRegistry",
    "CircuitOpenError",
    "CircuitState",
    "CleanupResult",
    "CompositeCheckpointStore",
    "ConfigTypeError",
    "ConfigValueError",
    "KeyedLimiterFactory",
    "KeyedRateLimiter",
    "LimiterFactory",
    "LocalCheckpointStore",
    "MetadataIndex",
    "RateLimitConfig",
    "RateLimitError",
    "RateLimiter",
    "RebuildResult",
    "ResilienceError",
    "SqliteCheckpointStore",
    "StateCheckpointManager",
    "bus",
    "checkpoint_manager",
    "circuit_breaker",
    "circuit_breaker_registry",
    "get_default_checkpoint_manager",
    "rate_limit",
    "rate_limiter_registry",
    "set_default_checkpoint_manager",
    "telemetry",
]
