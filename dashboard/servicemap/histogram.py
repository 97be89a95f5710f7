"""Fixed log-scale latency buckets: mergeable by addition, p95 within one bucket.

Bucket ``i`` holds durations in ``[GROWTH**i, GROWTH**(i+1))`` microseconds (bucket 0
also holds everything below 1 µs, the last one everything above ~1.2 hours). With
``GROWTH = 2**(1/4)`` a quantile read from the buckets is within a factor ``GROWTH``
(~19 %) of the exact one; reporting the bucket's geometric middle halves that.
Histograms are sparse ``{str(index): count}`` dicts so they store as small JSON.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

GROWTH: float = 2 ** (1 / 4)
BUCKETS = 128  # GROWTH**128 µs = 2**32 µs ≈ 71.6 min
_LOG_GROWTH = math.log(GROWTH)


def bucket_of(duration_us: int) -> int:
    """The index of the bucket holding ``duration_us``."""
    if duration_us <= 1:
        return 0
    index = int(math.log(duration_us) / _LOG_GROWTH)
    # Float rounding can land one off at a boundary: fix it exactly.
    if GROWTH ** (index + 1) <= duration_us:
        index += 1
    elif GROWTH**index > duration_us:
        index -= 1
    return min(max(index, 0), BUCKETS - 1)


def lower_bound(index: int) -> float:
    return 0.0 if index == 0 else GROWTH**index


def upper_bound(index: int) -> float:
    return math.inf if index == BUCKETS - 1 else GROWTH ** (index + 1)


def middle(index: int) -> float:
    """The bucket's representative value: its geometric middle, in µs."""
    return float(GROWTH ** (index + 0.5))


def add(into: dict[str, int], duration_us: int, count: int = 1) -> None:
    key = str(bucket_of(duration_us))
    into[key] = into.get(key, 0) + count


def merge(into: dict[int, int], histogram: Mapping[str, int]) -> None:
    for key, count in histogram.items():
        index = int(key)
        into[index] = into.get(index, 0) + int(count)


def merged(histograms: Iterable[Mapping[str, int]]) -> dict[int, int]:
    total: dict[int, int] = {}
    for histogram in histograms:
        merge(total, histogram)
    return total


def quantile_bucket(counts: Mapping[int, int], q: float) -> int | None:
    """The bucket holding the ``q`` quantile (nearest rank), or None when empty."""
    if not 0 < q <= 1:
        raise ValueError(f"q must be in (0, 1], got {q!r}")
    total = sum(counts.values())
    if total <= 0:
        return None
    rank = max(math.ceil(q * total), 1)
    seen = 0
    for index in sorted(counts):
        seen += counts[index]
        if seen >= rank:
            return index
    return max(counts)  # pragma: no cover - rank <= total always stops the loop


def quantile_us(counts: Mapping[int, int], q: float) -> float | None:
    """The ``q`` quantile in µs (the geometric middle of its bucket), or None when empty."""
    index = quantile_bucket(counts, q)
    return None if index is None else middle(index)
