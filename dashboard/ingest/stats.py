"""Ingest counters for the health check: process-wide, guarded by one lock."""

from __future__ import annotations

import threading
from typing import TypedDict


class IngestStats(TypedDict):
    requests: int
    accepted_spans: int
    rejected_spans: int
    refused_requests: int
    refused_spans: int
    bad_requests: int


_lock = threading.Lock()
_counts: IngestStats = {
    "requests": 0,
    "accepted_spans": 0,
    "rejected_spans": 0,
    "refused_requests": 0,
    "refused_spans": 0,
    "bad_requests": 0,
}


def add(**counts: int) -> None:
    with _lock:
        for key, value in counts.items():
            _counts[key] += value  # type: ignore[literal-required]


def snapshot() -> IngestStats:
    """Counters since the process started. ``refused_*``: answered 503 (queue full),
    the sender retries; ``rejected_spans``: invalid or over a limit, not stored."""
    with _lock:
        return IngestStats(**_counts)
