"""Metric and label names: validation, and the caller-name → Prometheus-name rule."""

from __future__ import annotations

import re
from collections.abc import Mapping

__all__ = [
    "RESERVED_PREFIX",
    "check_namespace",
    "label_key",
    "label_names",
    "label_values",
    "prometheus_name",
]

# The resilience4j families come from the scrape-time collector; a user metric with
# one of those names would emit a second family of the same name.
RESERVED_PREFIX = "resilience4j_"

_CALLER_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.:\-]*\Z")
_LABEL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_TO_UNDERSCORE = str.maketrans(".-", "__")


def prometheus_name(name: object, namespace: str = "") -> str:
    """Map a caller's metric name to its Prometheus name.

    Rule: the name must start with a letter or ``_`` and contain only letters, digits,
    ``_ . - :``; every ``.`` and ``-`` becomes ``_``; a non-empty ``namespace`` is
    prepended with ``_``. ``tasks.completed`` → ``tasks_completed`` (a counter is then
    exposed as ``tasks_completed_total`` by prometheus_client).

    Raises:
        ValueError: the name is not a str, is empty, has another character, or maps
            into the reserved ``resilience4j_`` prefix.
    """
    if not isinstance(name, str) or not _CALLER_NAME.match(name):
        raise ValueError(
            f"metric name must be a str of letters, digits, '_', '.', '-', ':' "
            f"starting with a letter or '_', got {name!r}"
        )
    mapped = name.translate(_TO_UNDERSCORE)
    if namespace:
        mapped = f"{namespace}_{mapped}"
    if mapped.startswith("__"):
        raise ValueError(f"metric name {name!r} maps to {mapped!r}: '__' prefixes are reserved")
    if mapped.startswith(RESERVED_PREFIX):
        raise ValueError(f"metric name {name!r} maps into the reserved {RESERVED_PREFIX!r} prefix")
    return mapped


def check_namespace(namespace: object) -> str:
    """Validate a namespace prefix (same characters as a name; '.'/'-' become '_')."""
    if namespace == "":
        return ""
    if not isinstance(namespace, str) or not _CALLER_NAME.match(namespace):
        raise ValueError(f"namespace must be '' or a valid metric name, got {namespace!r}")
    return namespace.translate(_TO_UNDERSCORE)


def label_names(metric: str, labels: Mapping[str, object], *, histogram: bool) -> tuple[str, ...]:
    """The sorted label names of ``labels``, validated.

    Raises:
        ValueError: a name is not ``[A-Za-z_][A-Za-z0-9_]*``, starts with ``__``, or is
            ``le`` on a histogram.
    """
    if not isinstance(labels, Mapping):
        raise ValueError(f"labels of {metric!r} must be a mapping, got {labels!r}")
    for key in labels:
        if not isinstance(key, str) or not _LABEL_NAME.match(key) or key.startswith("__"):
            raise ValueError(f"invalid label name {key!r} for metric {metric!r}")
        if histogram and key == "le":
            raise ValueError(f"histogram {metric!r} cannot have a label named 'le'")
    return tuple(sorted(labels))


def label_values(
    metric: str, labels: Mapping[str, object], names: tuple[str, ...]
) -> tuple[str, ...]:
    """The label values in ``names`` order, as plain str.

    Values must be str: with ints and bools allowed, ``1``, ``1.0`` and ``True`` would
    share one cache slot (they hash equal) while meaning different label values.

    Raises:
        ValueError: a value is not a str.
    """
    values = []
    for key in names:
        value = labels[key]
        if not isinstance(value, str):
            raise ValueError(f"label {key!r} of metric {metric!r} must be a str, got {value!r}")
        values.append(str.__str__(value))
    return tuple(values)


def label_key(name: str, names: tuple[str, ...], values: tuple[str, ...]) -> str:
    """The snapshot key of one series: ``name`` or ``name{a="x",b="y"}`` (sorted names)."""
    if not names:
        return name
    inner = ",".join(f'{key}="{_escape(value)}"' for key, value in zip(names, values, strict=True))
    return f"{name}{{{inner}}}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')
