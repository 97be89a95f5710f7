"""The traces app's settings, each with a default, validated when read.

The environment is read by ``dashboard.settings`` only; these read Django settings.
"""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from dashboard.durations import parse_timedelta

DEFAULT_MASKED_KEYS = ("password", "token", "secret", "authorization", "api_key", "cookie")
# /v1/: OTLP ingest requests would otherwise each add a span of their own.
DEFAULT_EXCLUDED_URLS = "/static/,/ws/,/favicon.ico,/v1/"
DEFAULT_SERVICE_NAME = "resilience-dashboard"


def _get(name: str, default: object) -> object:
    return getattr(settings, name, default)


def enabled() -> bool:
    """TRACES_ENABLED, default True."""
    value = _get("TRACES_ENABLED", True)
    if not isinstance(value, bool):
        raise ImproperlyConfigured(f"TRACES_ENABLED must be a bool, got {value!r}")
    return value


def api_read_ratio() -> float:
    """TRACES_API_READ_RATIO: the share of API reads (GET/HEAD under /api/ that start a
    trace) whose request span is recorded; default 0.01 (``request_sampling``)."""
    value = _get("TRACES_API_READ_RATIO", 0.01)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise ImproperlyConfigured(f"TRACES_API_READ_RATIO must be between 0 and 1, got {value!r}")
    return float(value)


def masked_keys() -> tuple[str, ...]:
    """TRACES_MASKED_KEYS: attribute keys containing any of these are stored as ``***``."""
    value = _get("TRACES_MASKED_KEYS", DEFAULT_MASKED_KEYS)
    if isinstance(value, list | tuple) and all(isinstance(v, str) and v for v in value):
        return tuple(value)
    raise ImproperlyConfigured(
        f"TRACES_MASKED_KEYS must be a list of non-empty strings, got {value!r}"
    )


def masked_value_patterns() -> tuple[str, ...]:
    """TRACES_MASKED_VALUE_PATTERNS: regular expressions of token shapes masked inside
    string values (default: ``masking.DEFAULT_VALUE_PATTERNS``; ``[]`` turns it off)."""
    import re

    from .masking import DEFAULT_VALUE_PATTERNS

    value = _get("TRACES_MASKED_VALUE_PATTERNS", DEFAULT_VALUE_PATTERNS)
    if isinstance(value, list | tuple) and all(isinstance(v, str) and v for v in value):
        for pattern in value:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ImproperlyConfigured(
                    f"TRACES_MASKED_VALUE_PATTERNS: {pattern!r} is not a regular expression: {exc}"
                ) from None
        return tuple(value)
    raise ImproperlyConfigured(
        f"TRACES_MASKED_VALUE_PATTERNS must be a list of regular expressions, got {value!r}"
    )


def _duration(name: str, default: timedelta) -> timedelta:
    value = _get(name, default)
    try:
        if isinstance(value, timedelta):
            result = value
        elif isinstance(value, int | float) and not isinstance(value, bool):
            result = timedelta(seconds=value)
        elif isinstance(value, str):
            result = parse_timedelta(value)
        else:
            raise ValueError(f"expected seconds, a timedelta or text like '1h', got {value!r}")
    except (ValueError, OverflowError) as exc:
        raise ImproperlyConfigured(f"{name}: {exc}") from exc
    if result <= timedelta(0):
        raise ImproperlyConfigured(f"{name} must be positive, got {value!r}")
    return result


def _positive_int(name: str, default: int) -> int:
    value = _get(name, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ImproperlyConfigured(f"{name} must be an int >= 1, got {value!r}")
    return value


def max_age() -> timedelta:
    """TRACES_MAX_AGE: spans older than this are deleted (default 1 hour)."""
    return _duration("TRACES_MAX_AGE", timedelta(hours=1))


def max_rows() -> int:
    """TRACES_MAX_ROWS: beyond this many spans the oldest are deleted (default 1,000,000)."""
    return _positive_int("TRACES_MAX_ROWS", 1_000_000)


def cleanup_interval() -> float:
    """TRACES_CLEANUP_INTERVAL: seconds between background clean-ups (default 60)."""
    return _duration("TRACES_CLEANUP_INTERVAL", timedelta(seconds=60)).total_seconds()


def queue_size() -> int:
    """TRACES_QUEUE_SIZE: spans waiting to be written at most; more are dropped."""
    return _positive_int("TRACES_QUEUE_SIZE", 20_000)


def batch_size() -> int:
    """TRACES_BATCH_SIZE: spans per bulk insert transaction."""
    return _positive_int("TRACES_BATCH_SIZE", 1_000)


def excluded_urls() -> str:
    """TRACES_EXCLUDED_URLS: comma-separated URL regexes not traced (settings.py fills it
    from OTEL_PYTHON_DJANGO_EXCLUDED_URLS or OTEL_PYTHON_EXCLUDED_URLS when set)."""
    value = _get("TRACES_EXCLUDED_URLS", DEFAULT_EXCLUDED_URLS)
    if isinstance(value, list | tuple):
        value = ",".join(value)
    if not isinstance(value, str):
        raise ImproperlyConfigured(f"TRACES_EXCLUDED_URLS must be text or a list, got {value!r}")
    return value


def otlp_endpoint() -> str:
    """TRACES_OTLP_ENDPOINT: where spans are also exported (OTLP http/protobuf), or ""."""
    value = _get("TRACES_OTLP_ENDPOINT", "")
    if not isinstance(value, str):
        raise ImproperlyConfigured(f"TRACES_OTLP_ENDPOINT must be text, got {value!r}")
    return value.strip()


def service_name() -> str:
    """TRACES_SERVICE_NAME (from OTEL_SERVICE_NAME), or "" for the SDK's resource detection."""
    value = _get("TRACES_SERVICE_NAME", "")
    if not isinstance(value, str):
        raise ImproperlyConfigured(f"TRACES_SERVICE_NAME must be text, got {value!r}")
    return value.strip()


def upload_max_bytes() -> int:
    """TRACES_UPLOAD_MAX_BYTES: largest OTLP/JSON file the trace page shows (8 MB,
    checked again after gunzip). A Django setting only: no environment variable."""
    return _positive_int("TRACES_UPLOAD_MAX_BYTES", 8 * 1024 * 1024)


def upload_max_spans() -> int:
    """TRACES_UPLOAD_MAX_SPANS: spans of an uploaded file shown; the rest are counted."""
    return _positive_int("TRACES_UPLOAD_MAX_SPANS", 2_000)
