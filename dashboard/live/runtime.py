"""The process's live-update machinery, started on the server's event loop on demand."""

from __future__ import annotations

from .broadcast import broadcaster
from .sampler import Sampler

sampler = Sampler(broadcaster)


def ensure_started() -> None:
    """Start the broadcaster and the sampler on the running loop (no-op if running)."""
    broadcaster.start()
    sampler.start()


async def stop() -> None:
    """Stop both tasks and forget their state (tests, shutdown); ``ensure_started``
    starts afresh."""
    await sampler.stop()
    await broadcaster.stop()
    sampler.reset()
    broadcaster.reset()
