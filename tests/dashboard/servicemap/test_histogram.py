from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dashboard.servicemap import histogram


@given(st.integers(min_value=2, max_value=2**32 - 1))
def test_a_duration_lies_inside_its_bucket(duration: int) -> None:
    index = histogram.bucket_of(duration)
    assert histogram.lower_bound(index) <= duration < histogram.upper_bound(index)


@given(st.integers(min_value=0, max_value=2**40), st.integers(min_value=0, max_value=2**40))
def test_buckets_keep_the_order_of_durations(a: int, b: int) -> None:
    if a <= b:
        assert histogram.bucket_of(a) <= histogram.bucket_of(b)


def test_extremes_land_in_the_first_and_last_bucket() -> None:
    assert histogram.bucket_of(0) == 0
    assert histogram.bucket_of(-5) == 0
    assert histogram.bucket_of(10**15) == histogram.BUCKETS - 1


def _exact_p95(values: list[int]) -> int:
    ordered = sorted(values)
    return ordered[max(math.ceil(0.95 * len(ordered)), 1) - 1]


@given(st.lists(st.integers(min_value=1, max_value=10**9), min_size=1, max_size=300))
def test_p95_from_the_histogram_is_within_one_bucket_of_the_exact_p95(values: list[int]) -> None:
    counts: dict[str, int] = {}
    for value in values:
        histogram.add(counts, value)
    merged = histogram.merged([counts])
    exact = _exact_p95(values)
    assert histogram.quantile_bucket(merged, 0.95) == histogram.bucket_of(exact)
    estimate = histogram.quantile_us(merged, 0.95)
    assert estimate is not None
    # The geometric middle of the bucket: within sqrt(GROWTH) of anything in it.
    assert exact / histogram.GROWTH**0.5 <= estimate <= exact * histogram.GROWTH**0.5 + 1e-9


def test_merging_adds_counts_bucket_by_bucket() -> None:
    a: dict[str, int] = {}
    b: dict[str, int] = {}
    histogram.add(a, 100, 3)
    histogram.add(b, 100)
    histogram.add(b, 10_000)
    merged = histogram.merged([a, b])
    assert merged == {histogram.bucket_of(100): 4, histogram.bucket_of(10_000): 1}


def test_an_empty_histogram_has_no_quantile() -> None:
    assert histogram.quantile_us({}, 0.95) is None


@pytest.mark.parametrize("q", [0, -0.1, 1.5])
def test_a_quantile_outside_0_1_is_refused(q: float) -> None:
    with pytest.raises(ValueError, match="q must be in"):
        histogram.quantile_bucket({1: 1}, q)
