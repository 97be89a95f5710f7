from __future__ import annotations

import pytest

from dashboard.traces import masking
from dashboard.traces.conf import DEFAULT_MASKED_KEYS
from dashboard.traces.masking import MASK, Masker


def test_a_remembered_string_is_masked_as_the_first_time_and_per_masker() -> None:
    masker = Masker(DEFAULT_MASKED_KEYS)
    attributes = {
        "url": "https://x/?api_key=abc123def&q=1",
        "note": "plain text",
        "count": 3,
        "flag": True,
        "none": None,
        "password": "hunter2",
        "nested": {"token": "t", "items": ["Bearer abcdefgh", 1.5]},
    }
    first = masker.mask(attributes)
    assert first == masker.mask(attributes)  # second time from the cache
    assert first["url"] == f"https://x/?api_key={MASK}&q=1"
    assert first["note"] == "plain text"
    assert (first["count"], first["flag"], first["none"]) == (3, True, None)
    assert first["password"] == MASK
    assert first["nested"] == {"token": MASK, "items": [f"Bearer {MASK}", 1.5]}
    # Another masker (other keys) does not see the first one's results.
    assert Masker(()).mask({"url": attributes["url"]}) == {"url": attributes["url"]}


def test_the_string_cache_stays_bounded_and_skips_long_strings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(masking, "_TEXT_CACHE_LIMIT", 3)
    masker = Masker(DEFAULT_MASKED_KEYS)
    for n in range(10):
        assert masker.mask({"v": f"secret=s{n}x"}) == {"v": f"secret={MASK}"}
    assert len(masker._texts) <= 3
    long = "secret=" + "x" * (masking._TEXT_CACHE_MAX_LENGTH + 1)
    assert masker.mask({"v": long}) == {"v": f"secret={MASK}"}
    assert long not in masker._texts
