"""Mask sensitive attribute values before a span is stored."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

MASK = "***"
_NOT_ALNUM = re.compile(r"[^a-z0-9]")
_CACHE_LIMIT = 10_000


def _normalise(key: str) -> str:
    # "X-Api-Key", "api.key" and "apiKey" all become "xapikey" / "apikey".
    return _NOT_ALNUM.sub("", key.lower())


class Masker:
    """Replaces the value of every attribute whose key contains a sensitive word.

    Matching ignores case and punctuation, so ``api_key`` also catches
    ``X-API-Key`` and ``http.request.header.x_api_key``. Decisions are cached per
    key (attribute keys are few and repeat).
    """

    __slots__ = ("_cache", "_needles")

    def __init__(self, keys: Iterable[str]) -> None:
        self._needles = tuple(n for n in (_normalise(k) for k in keys) if n)
        self._cache: dict[str, bool] = {}

    def is_sensitive(self, key: str) -> bool:
        hit = self._cache.get(key)
        if hit is None:
            normalised = _normalise(key)
            hit = any(needle in normalised for needle in self._needles)
            if len(self._cache) < _CACHE_LIMIT:
                self._cache[key] = hit
        return hit

    def mask(self, attributes: Mapping[str, Any] | None) -> dict[str, Any]:
        """A JSON-ready copy of ``attributes``: sequences as lists, secrets as ``***``."""
        if not attributes:
            return {}
        out: dict[str, Any] = {}
        for key, value in attributes.items():
            if self.is_sensitive(key):
                out[key] = MASK
            elif isinstance(value, tuple | list):
                out[key] = list(value)
            else:
                out[key] = value
        return out
