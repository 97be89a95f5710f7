"""Persist breaker transitions: bus listener → bounded queue → batched inserts.

The listener runs on the thread of the call that tripped the breaker, so it only
builds a small row and hands it to a BatchDispatcher; the insert happens on the
dispatcher's worker thread. A full queue drops and counts (see ``stats()``).

In cluster mode (breakers shared through Redis) every process hears of every
transition, but only the process where it happened writes it: events marked
``observed`` are skipped, so each transition is one row cluster-wide.
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime

from django.db import close_old_connections

from dashboard import runtime
from resilience.dispatch import BatchDispatcher
from resilience.events import BreakerStateChanged, Event

from .models import BreakerEvent

logger = logging.getLogger(__name__)

_lock = threading.Lock()
_dispatcher: BatchDispatcher[BreakerEvent] | None = None


def _write(rows: list[BreakerEvent]) -> None:
    close_old_connections()
    try:
        BreakerEvent.objects.bulk_create(rows)
    finally:
        close_old_connections()


def dispatcher() -> BatchDispatcher[BreakerEvent]:
    """The process's dispatcher, started on first use (not at import or in migrate)."""
    global _dispatcher
    if _dispatcher is None:
        with _lock:
            if _dispatcher is None:
                _dispatcher = BatchDispatcher(
                    _write, max_queue=10_000, max_batch=200, name="breaker-recorder"
                )
    return _dispatcher


def to_row(event: BreakerStateChanged) -> BreakerEvent:
    return BreakerEvent(
        breaker=event.name[:200],
        from_state=event.from_state,
        to_state=event.to_state,
        reason=event.reason[:500],
        failure_count=event.failure_count,
        failure_rate=event.failure_rate,
        occurred_at=datetime.fromtimestamp(event.time, tz=UTC),
        process=runtime.identity().process,
        actor=(event.actor or "")[:150],
        note=event.note or "",
    )


def on_event(event: Event) -> None:
    """Bus listener (subscribed by ``dashboard.runtime``)."""
    if isinstance(event, BreakerStateChanged) and not event.observed:
        dispatcher().submit(to_row(event))


def flush(timeout: float = 5.0) -> bool:
    """Write everything queued so far (tests, shutdown)."""
    return _dispatcher.flush(timeout) if _dispatcher is not None else True


def stats() -> dict[str, int]:
    d = _dispatcher
    if d is None:
        return {"queued": 0, "dropped": 0, "written": 0, "errors": 0}
    return {
        "queued": len(d),
        "dropped": d.dropped,
        "written": d.delivered,
        "errors": d.handler_errors,
    }
