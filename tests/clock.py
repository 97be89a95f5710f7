"""The fake clock every test injects: time moves only when the test says so."""

from __future__ import annotations

WALL_START = 1_700_000_000.0


class FakeClock:
    """Seconds that move only when told; its sleeps move it too (and are recorded)."""

    def __init__(self, now: float = 1000.0, *, wall_start: float = WALL_START) -> None:
        self.now = now
        self.wall_start = wall_start
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    async def async_sleep(self, seconds: float) -> None:
        self.sleep(seconds)

    def wall(self) -> float:
        """A wall clock (epoch seconds) that moves with this one."""
        return self.wall_start + self.now
