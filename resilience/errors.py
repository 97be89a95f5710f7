"""Exceptions raised by :mod:`resilience`.

Every error derives from :class:`ResilienceError`. Configuration errors are also
``ValueError`` / ``TypeError`` so callers that already catch those keep working.
All of them pickle (they cross process boundaries in worker pools).
"""

from __future__ import annotations

__all__ = [
    "CallTimeoutError",
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


class ResilienceError(Exception):
    """Base class of every error raised by this package."""


class ConfigValueError(ResilienceError, ValueError):
    """A configuration value is out of range (zero, negative, too large...)."""


class ConfigTypeError(ResilienceError, TypeError):
    """A configuration value has the wrong type."""


class RateLimitError(ResilienceError):
    """The rate limit was exceeded.

    Attributes:
        retry_after: seconds until enough tokens are available (``None`` if unknown).
        name: the limiter's name, when it has one.
    """

    def __init__(
        self,
        message: str = "rate limit exceeded",
        *,
        retry_after: float | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.name = name

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild, (type(self), self.args, self.__dict__))


class CircuitBreakerError(ResilienceError):
    """Base class of circuit breaker errors."""


class CircuitOpenError(CircuitBreakerError):
    """The breaker rejected the call without running it.

    Attributes:
        name: the breaker's name.
        remaining: seconds until the breaker lets a trial call through; ``None`` when it
            is forced open by an operator, ``0`` when half-open but all trial slots are taken.
    """

    def __init__(self, name: str, remaining: float | None, message: str | None = None) -> None:
        if message is None:
            if remaining is None:
                message = f"circuit breaker {name!r} is forced open"
            elif remaining == 0:
                message = f"circuit breaker {name!r} is half-open and its trial calls are taken"
            else:
                message = f"circuit breaker {name!r} is open; retry in {remaining:.3f}s"
        super().__init__(message)
        self.name = name
        self.remaining = remaining

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild, (type(self), self.args, self.__dict__))


class CallTimeoutError(CircuitBreakerError, TimeoutError):
    """The call ran past the breaker's ``call_timeout``; the breaker counted a failure.

    Also a :class:`TimeoutError`, so code catching timeouts catches it. An async call
    was cancelled at the deadline; a sync call ran to completion and its result was
    discarded (see ``CircuitBreakerConfig.call_timeout``).

    Attributes:
        name: the breaker's name.
        timeout: the ``call_timeout`` in seconds.
    """

    def __init__(self, name: str, timeout: float, message: str | None = None) -> None:
        if message is None:
            message = f"call through circuit breaker {name!r} timed out after {timeout:g}s"
        super().__init__(message)
        self.name = name
        self.timeout = timeout

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild, (type(self), self.args, self.__dict__))


class CheckpointError(ResilienceError):
    """Base class of checkpoint errors."""


class CheckpointNotFoundError(CheckpointError, LookupError):
    """No checkpoint has the given id."""


class CheckpointCorruptedError(CheckpointError):
    """A stored checkpoint failed its integrity check; nothing was decoded."""


def _rebuild(
    cls: type[BaseException], args: tuple[object, ...], state: dict[str, object]
) -> BaseException:
    exc = cls.__new__(cls)
    exc.args = args
    exc.__dict__.update(state)
    return exc
