"""The process's live-update machinery: asyncio tasks on the server's event loop.

``dashboard.runtime`` subscribes the broadcaster to the bus when it starts, and starts
these tasks (``Runtime.start_live``) when the first live page connects, on that loop;
``Runtime.astop`` stops them.
"""

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
