"""The ingest app's settings, each with a default, validated when read."""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

PERMISSION = "traces.ingest_spans"


def _positive_int(name: str, default: int) -> int:
    value = getattr(settings, name, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ImproperlyConfigured(f"{name} must be an int >= 1, got {value!r}")
    return value


def max_body_bytes() -> int:
    """INGEST_MAX_BODY_BYTES: largest request body, checked after decompression (8 MB)."""
    return _positive_int("INGEST_MAX_BODY_BYTES", 8 * 1024 * 1024)


def max_spans() -> int:
    """INGEST_MAX_SPANS: spans kept per request; the rest are rejected (partial_success)."""
    return _positive_int("INGEST_MAX_SPANS", 10_000)


def max_attributes() -> int:
    """INGEST_MAX_ATTRIBUTES: attributes kept per span, event, resource, list or map.

    At most the attribute index's ``MAX_PER_SPAN``: a span's attributes beyond what the
    index holds would be found by a combined filter (JSON) but not by attribute alone.
    """
    from dashboard.traces.attribute_index import MAX_PER_SPAN

    value = _positive_int("INGEST_MAX_ATTRIBUTES", 128)
    if value > MAX_PER_SPAN:
        raise ImproperlyConfigured(
            f"INGEST_MAX_ATTRIBUTES must be at most {MAX_PER_SPAN} (the attribute index "
            f"holds that many a span), got {value}"
        )
    return value


def max_events() -> int:
    """INGEST_MAX_EVENTS: events kept per span."""
    return _positive_int("INGEST_MAX_EVENTS", 128)


def max_value_length() -> int:
    """INGEST_MAX_VALUE_LENGTH: characters kept per string attribute value or key."""
    return _positive_int("INGEST_MAX_VALUE_LENGTH", 4096)


def max_metric_series() -> int:
    """INGEST_MAX_METRIC_SERIES: metric series kept in all; a new one beyond is rejected."""
    return _positive_int("INGEST_MAX_METRIC_SERIES", 10_000)


def retry_after() -> int:
    """INGEST_RETRY_AFTER: seconds a sender is told to wait when the span queue is full."""
    return _positive_int("INGEST_RETRY_AFTER", 5)
