"""Count-based sliding window of call outcomes for the breaker's failure-rate rule.

Not thread-safe on its own: the breaker touches it only while holding its lock.
"""

from __future__ import annotations

__all__ = ["OutcomeWindow"]


class OutcomeWindow:
    """The outcomes (failed or not) of the last ``size`` recorded calls, O(1) per record."""

    __slots__ = ("_failures", "_count", "_next", "_ring", "_size")

    def __init__(self, size: int) -> None:
        self._size = size
        self._ring = bytearray(size)
        self._next = 0
        self._count = 0
        self._failures = 0

    def __len__(self) -> int:
        return self._count

    @property
    def failures(self) -> int:
        """Failed calls among those in the window."""
        return self._failures

    def record(self, failed: bool) -> None:
        """Add one outcome, pushing out the oldest when the window is full."""
        index = self._next
        ring = self._ring
        if self._count == self._size:
            self._failures -= ring[index]
        else:
            self._count += 1
        ring[index] = failed
        self._failures += failed
        index += 1
        self._next = 0 if index == self._size else index

    def rate(self, minimum: int) -> float | None:
        """Failure percentage, or None while fewer than ``minimum`` calls are recorded."""
        if self._count < minimum or self._count == 0:
            return None
        return self._failures * 100.0 / self._count

    def clear(self) -> None:
        """Forget every outcome."""
        if self._count:
            self._ring = bytearray(self._size)
            self._next = 0
            self._count = 0
            self._failures = 0
