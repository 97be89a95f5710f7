"""Mask secrets before a span is stored: by attribute key, and inside string values.

Two rules, both applied to span and event attributes, resource attributes and the
status message (exception messages and stack traces are event attributes):

- keys: an attribute whose key contains a sensitive word (``TRACES_MASKED_KEYS``) is
  stored as ``***``;
- values: inside every string, ``name=value`` and ``name: value`` pairs whose name
  contains one of those words (so URL query parameters such as ``?api_key=...`` and
  ``password=...`` in an exception message), ``Bearer``/``Basic`` credentials, and
  strings shaped like well-known tokens (``TRACES_MASKED_VALUE_PATTERNS``: OpenAI
  ``sk-...``, GitHub ``ghp_...``, JWTs, this project's ``rdt_...``, AWS key ids, Slack
  tokens) have the secret part replaced by ``***``.

Both rules apply inside lists and maps too, at any depth up to ``MAX_DEPTH`` containers
(deeper ones become ``NESTED_TOO_DEEPLY``): a ``password`` key in a map inside an
attribute, or a token inside a list inside a map, is masked like a top-level one.

This is a safety net, not a guarantee: a secret with none of these names or shapes
(a bare password in free text) is stored as it is.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import unquote

MASK = "***"
MAX_DEPTH = 8
NESTED_TOO_DEEPLY = "<nested too deeply>"

DEFAULT_VALUE_PATTERNS: tuple[str, ...] = (
    r"\bsk-(?:proj-|ant-)?[A-Za-z0-9_-]{16,}",
    r"\b(?:ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9]{20,}",
    r"\bgithub_pat_[A-Za-z0-9_]{20,}",
    r"\beyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*",
    r"\brdt_[0-9a-f]{16}_[A-Za-z0-9_-]{20,}",
    r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b",
    r"\bxox[abprs]-[A-Za-z0-9-]{10,}",
)
# "Authorization: Bearer abc", "Basic dXNlcjpwdw==": keep the scheme, hide the rest.
_CREDENTIALS = re.compile(r"(?i)\b(bearer|basic|digest)(\s+)[A-Za-z0-9._~+/=-]{6,}")
# "Authorization: Token abc" (any scheme, not only the three above): hide the rest.
_AUTH_SCHEME = re.compile(
    r"(?i)(\b(?:proxy-)?authorization\\?[\"']?\s*[:=]\s*\\?[\"']?[A-Za-z][\w.-]*\s+)[^\s\"',;&]+"
)
# scheme://user:password@host
_URL_PASSWORD = re.compile(r"(://[^/\s:@]+:)[^/\s@]+@")
# The characters a value stops at: separators of query strings, lists and quotes.
# A value may be quoted, or quoted with escaped quotes (JSON inside a JSON string).
_PAIR_VALUE = r"(\\\"(?:[^\"\\]|\\[^\"])*\\\"|\"[^\"]*\"|'[^']*'|[^\s&#,;\"'<>)\]}]+)"
_NOT_ALNUM = re.compile(r"[^a-z0-9]")
_CACHE_LIMIT = 10_000
# Masked strings are remembered while short and few: span attribute values repeat
# (service names, workflow ids, agents), and the regexes cost far more than a lookup.
_TEXT_CACHE_LIMIT = 4_096
_TEXT_CACHE_MAX_LENGTH = 256


_SCALARS = frozenset({int, float, bool, type(None)})


def _normalise(key: str) -> str:
    # "X-Api-Key", "api.key" and "apiKey" all become "xapikey" / "apikey".
    return _NOT_ALNUM.sub("", key.lower())


class Masker:
    """Replaces the value of every attribute whose key contains a sensitive word.

    Matching ignores case and punctuation, so ``api_key`` also catches
    ``X-API-Key`` and ``http.request.header.x_api_key``. Decisions are cached per
    key (attribute keys are few and repeat), and so are the masked forms of short
    strings (values repeat too); ``mask_text`` is a pure function of its text, so a
    remembered result is the one it would compute. Both caches are plain dicts read
    and filled from any thread: a race only computes a result twice.
    """

    __slots__ = ("_cache", "_needles", "_pairs", "_shapes", "_texts")

    def __init__(
        self, keys: Iterable[str], value_patterns: Sequence[str] = DEFAULT_VALUE_PATTERNS
    ) -> None:
        keys = list(keys)
        self._needles = tuple(n for n in (_normalise(k) for k in keys) if n)
        self._cache: dict[str, bool] = {}
        self._texts: dict[str, str] = {}
        self._pairs = _pair_pattern(keys)
        self._shapes = (
            re.compile("|".join(f"(?:{p})" for p in value_patterns)) if value_patterns else None
        )

    def mask_text(self, text: str, _depth: int = 0) -> str:
        """``text`` with the secrets inside it (see the module docstring) as ``***``."""
        if len(text) > 6:
            text = _CREDENTIALS.sub(lambda m: f"{m[1]}{m[2]}{MASK}", text)
            text = _AUTH_SCHEME.sub(rf"\1{MASK}", text)
        if "@" in text:
            text = _URL_PASSWORD.sub(rf"\1{MASK}@", text)
        if self._pairs is not None and ("=" in text or ":" in text):
            text = self._pairs.sub(lambda m: f"{m[1]}{m[2]}{MASK}", text)
        if self._shapes is not None:
            text = self._shapes.sub(MASK, text)
        if "%" in text and _depth < 3:
            # ?next=%2Fx%3Fapi_key%3D...: a secret hidden by percent-encoding. The text
            # is stored decoded only when that reveals (and masks) something.
            decoded = unquote(text)
            if decoded != text:
                masked = self.mask_text(decoded, _depth=_depth + 1)
                if masked != decoded:
                    return masked
        return text

    def _text(self, text: str) -> str:
        masked = self._texts.get(text)
        if masked is None:
            masked = self.mask_text(text)
            if len(text) <= _TEXT_CACHE_MAX_LENGTH:
                if len(self._texts) >= _TEXT_CACHE_LIMIT:
                    self._texts.clear()
                self._texts[text] = masked
        return masked

    def _value(self, value: Any, depth: int = 0) -> Any:
        if isinstance(value, str):
            return self._text(value)
        if isinstance(value, tuple | list | Mapping):
            if depth >= MAX_DEPTH:
                return NESTED_TOO_DEEPLY
            if isinstance(value, Mapping):
                return self._mapping(value, depth + 1)
            return [self._value(v, depth + 1) for v in value]
        return value

    def _mapping(self, attributes: Mapping[str, Any], depth: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        keys, texts = self._cache, self._texts
        for key, value in attributes.items():
            sensitive = keys.get(key)
            if sensitive is None:
                sensitive = self.is_sensitive(key)
            if sensitive:
                out[key] = MASK
            elif type(value) is str:
                masked = texts.get(value)
                out[key] = self._text(value) if masked is None else masked
            elif type(value) in _SCALARS:
                out[key] = value
            else:
                out[key] = self._value(value, depth)
        return out

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
        return self._mapping(attributes, 0)


def _pair_pattern(keys: Iterable[str]) -> re.Pattern[str] | None:
    """``<name containing a key>`` ``=`` or ``:`` ``<value>``; "api_key" also matches
    "apiKey", "api-key" and "API.KEY" (any punctuation or none between the words)."""
    words = []
    for key in keys:
        parts = [re.escape(p) for p in re.split(r"[^A-Za-z0-9]+", key) if p]
        if parts:
            words.append(r"[^A-Za-z0-9]?".join(parts))
    if not words:
        return None
    name = rf"[A-Za-z0-9_.\-\[\]]*(?:{'|'.join(words)})[A-Za-z0-9_.\-\[\]]*"
    return re.compile(
        rf"(?i)(\b{name}\\?[\"']?)(\s*[=:]\s*)(?!\s)(?!//)(?!(?:bearer|basic|digest)\s)(?![A-Za-z][\w.-]*\s+\*\*\*){_PAIR_VALUE}"
    )
