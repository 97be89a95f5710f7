"""Health checks behind ``GET /api/observability/health``.

Status: ``down`` when the database is unreachable (nothing works without it),
``degraded`` when any other check fails (live updates, checkpoint saves, span
persistence or a protected service is affected), else ``ok``.
"""

from __future__ import annotations

import asyncio
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any, Literal, TypedDict

from asgiref.sync import async_to_sync
from django.conf import settings
from django.core.files.base import ContentFile
from django.db import connection

from dashboard.selectors import BLOCKING_STATES
from resilience.circuit_breaker import circuit_breaker_registry

Status = Literal["ok", "degraded", "down"]


class Check(TypedDict):
    status: Status
    detail: str
    data: dict[str, Any]


def _check(status: Status, detail: str, **data: Any) -> Check:
    return {"status": status, "detail": detail, "data": data}


def check_database() -> Check:
    started = time.perf_counter()
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception as exc:
        return _check("down", f"database unreachable: {type(exc).__name__}: {exc}")
    return _check("ok", "reachable", vendor=connection.vendor, ms=_ms(started))


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)


async def _round_trip(layer: Any, seconds: float) -> bool:
    async with asyncio.timeout(seconds):
        channel = await layer.new_channel("health.")
        nonce = secrets.token_hex(8)
        await layer.send(channel, {"type": "health.ping", "nonce": nonce})
        message = await layer.receive(channel)
    return bool(message.get("nonce") == nonce)


def check_channel_layer() -> Check:
    from channels.layers import get_channel_layer

    started = time.perf_counter()
    try:
        layer = get_channel_layer()
        if layer is None:
            return _check("degraded", "no channel layer configured: no live updates")
        timeout = float(getattr(settings, "HEALTH_CHANNEL_TIMEOUT", 2.0))
        ok = async_to_sync(_round_trip)(layer, timeout)
    except Exception as exc:
        return _check("degraded", f"channel layer failed: {type(exc).__name__}: {exc}")
    if not ok:
        return _check("degraded", "channel layer returned another message")
    return _check("ok", "send/receive round trip", backend=type(layer).__name__, ms=_ms(started))


def check_checkpoint_storage() -> Check:
    from dashboard.checkpoints.store import get_store

    try:
        blobs = get_store().blobs
        storage = blobs.storage
        name = f"{blobs.prefix}/.health-{secrets.token_hex(8)}.tmp"
        saved = storage.save(name, ContentFile(b"ok"))
        storage.delete(saved)
    except Exception as exc:
        return _check("degraded", f"checkpoint storage not writable: {type(exc).__name__}: {exc}")
    return _check("ok", "writable", storage=type(storage).__name__, alias=blobs.alias)


_drops_lock = threading.Lock()
_last_lost: int | None = None


def check_span_queue() -> Check:
    """Degraded when spans were dropped or lost since the previous health check."""
    global _last_lost
    from dashboard.traces import tracing

    stats = tracing.stats()
    lost = stats["dropped"] + stats["failed"]
    with _drops_lock:
        previous, _last_lost = _last_lost, lost
    new = lost - previous if previous is not None and lost >= previous else lost
    if new > 0:
        return _check(
            "degraded", f"{new} spans dropped or not stored since the last check", **stats
        )
    return _check("ok", "no spans lost since the last check", **dict(stats))


_last_refused: int | None = None


def check_span_ingest() -> Check:
    """Degraded when OTLP senders were refused (503, queue full) since the previous check."""
    global _last_refused
    from dashboard.ingest import stats as ingest_stats

    counts = ingest_stats.snapshot()
    refused = counts["refused_spans"]
    with _drops_lock:
        previous, _last_refused = _last_refused, refused
    new = refused - previous if previous is not None and refused >= previous else refused
    if new > 0:
        return _check(
            "degraded",
            f"{new} ingested spans refused (queue full, senders retry) since the last check",
            **counts,
        )
    return _check("ok", "no ingested spans refused since the last check", **dict(counts))


def check_breakers() -> Check:
    states = {b.name: b.state.value for b in circuit_breaker_registry.all()}
    opened = sorted(name for name, state in states.items() if state in BLOCKING_STATES)
    if opened:
        return _check("degraded", f"{len(opened)} circuit breaker(s) open", open=opened)
    return _check("ok", f"{len(states)} circuit breaker(s), none open", open=[])


CHECKS: dict[str, Callable[[], Check]] = {
    "database": check_database,
    "channel_layer": check_channel_layer,
    "checkpoint_storage": check_checkpoint_storage,
    "span_queue": check_span_queue,
    "span_ingest": check_span_ingest,
    "breakers": check_breakers,
}


def overall(checks: dict[str, Check]) -> Status:
    statuses = {check["status"] for check in checks.values()}
    if "down" in statuses:
        return "down"
    return "degraded" if "degraded" in statuses else "ok"


def run_checks() -> tuple[Status, dict[str, Check]]:
    """Run every check; returns the overall status and each check's result."""
    checks = {name: _safe(name, check) for name, check in CHECKS.items()}
    return overall(checks), checks


def _safe(name: str, check: Callable[[], Check]) -> Check:
    # A check function must not turn the health endpoint into a 500.
    try:
        return check()
    except Exception as exc:
        status: Status = "down" if name == "database" else "degraded"
        return _check(status, f"check failed: {type(exc).__name__}: {exc}")
