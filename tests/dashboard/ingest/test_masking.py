"""Masking of ingested attributes against crafted values: secrets nested in lists and
maps, nesting deep and wide, and secrets longer than the truncation limit."""

from __future__ import annotations

from typing import Any

from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue, KeyValueList
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Status

from dashboard.ingest import spans as ingest
from dashboard.ingest.spans import Limits, convert
from dashboard.traces.conf import DEFAULT_MASKED_KEYS
from dashboard.traces.masking import MASK, MAX_DEPTH, NESTED_TOO_DEEPLY, Masker

from .test_rows import _kv, _span

MASKER = Masker(DEFAULT_MASKED_KEYS)
LIMITS = Limits(max_spans=10, max_attributes=16, max_events=4, max_value_length=40)
TOKEN = "sk-proj-" + "A1b2C3d4" * 4  # an OpenAI-shaped key, 40 characters


def _attributes(*pairs: Any, limits: Limits = LIMITS, **span: Any) -> Any:
    spans = [_span(1, attributes=list(pairs), **span)]
    group = ResourceSpans(scope_spans=[ScopeSpans(spans=spans)])
    converted = convert([group], limits=limits, masker=MASKER)
    return converted.rows[0]


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in [k, *_strings(v)]]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def test_sensitive_keys_and_secret_strings_inside_maps_and_lists_are_masked() -> None:
    value = {
        "headers": {"Authorization": "Token abc", "X-Api-Key": "k1", "accept": "json"},
        "list": ["plain", f"key {TOKEN}", {"password": "hunter2", "note": "token=t0psecret"}],
        "deep": {"a": {"b": {"c": [["password=hunter2"]]}}},
    }
    row = _attributes(_kv("request", value))
    request = row.attributes["request"]
    assert request["headers"] == {"Authorization": MASK, "X-Api-Key": MASK, "accept": "json"}
    assert request["list"] == ["plain", f"key {MASK}", {"password": MASK, "note": f"token={MASK}"}]
    assert request["deep"] == {"a": {"b": {"c": [[f"password={MASK}"]]}}}
    stored = " ".join(_strings(row.attributes))
    assert "hunter2" not in stored and "t0psecret" not in stored and "A1b2" not in stored


def test_the_writers_masker_masks_nested_values_by_the_same_rules() -> None:
    masked = MASKER.mask({"m": {"token": "t", "l": ("Bearer abcdefgh", 1, {"secret": 2})}})
    assert masked == {"m": {"token": MASK, "l": [f"Bearer {MASK}", 1, {"secret": MASK}]}}


def _nested(depth: int, leaf: AnyValue) -> AnyValue:
    value = leaf
    for i in range(depth):
        if i % 2:
            value = AnyValue(array_value=ArrayValue(values=[value]))
        else:
            value = AnyValue(kvlist_value=KeyValueList(values=[KeyValue(key="k", value=value)]))
    return value


def test_nesting_deeper_than_the_limit_becomes_a_placeholder_and_nothing_leaks() -> None:
    leaf = AnyValue(string_value="password=hunter2")
    row = _attributes(
        KeyValue(key="ok", value=_nested(MAX_DEPTH, leaf)),
        KeyValue(key="deep", value=_nested(20, leaf)),  # protobuf refuses ~30
    )
    assert "hunter2" not in " ".join(_strings(row.attributes))
    assert f"password={MASK}" in _strings(row.attributes["ok"])
    assert _strings(row.attributes["deep"]) == ["k"] * (MAX_DEPTH // 2) + [NESTED_TOO_DEEPLY]
    assert MASKER.mask({"deep": row.attributes["deep"]}) == {"deep": row.attributes["deep"]}


def test_wide_and_deep_values_are_bounded_per_attribute() -> None:
    limits = Limits(max_spans=10, max_attributes=128, max_events=4, max_value_length=40)
    level = AnyValue(string_value="token=abc")
    for _ in range(2):  # 128 ** 2 leaves if nothing bounded them
        level = AnyValue(array_value=ArrayValue(values=[level] * 128))
    row = _attributes(KeyValue(key="a", value=level), KeyValue(key="b", value=level), limits=limits)
    for key in ("a", "b"):  # each attribute has its own budget
        leaves = _strings(row.attributes[key])
        assert 128 < len(leaves) <= ingest._MAX_NESTED_VALUES
        assert set(leaves) == {f"token={MASK}"}


def test_a_secret_longer_than_the_limit_is_masked_before_it_is_cut() -> None:
    prefix = "x" * 29 + " "  # the token starts 10 characters before the cut
    long_secret = "Bearer " + "z" * 100
    row = _attributes(
        _kv("text", prefix + TOKEN),
        _kv("auth", long_secret),
        _kv("nested", {"l": [prefix + TOKEN]}),
        status=Status(code=2, message=prefix + TOKEN),
    )
    assert row.attributes["text"] == prefix + MASK
    assert row.attributes["auth"] == f"Bearer {MASK}"
    assert row.attributes["nested"] == {"l": [prefix + MASK]}
    assert row.status_message == prefix + MASK
    assert "sk-proj" not in " ".join(_strings(row.attributes))


def test_a_sensitive_word_past_the_key_length_limit_still_masks_the_value() -> None:
    key = "k" * 50 + ".password"
    row = _attributes(_kv(key, "hunter2"), _kv("m", {key: "hunter2"}))
    assert row.attributes == {"k" * 40: MASK, "m": {"k" * 40: MASK}}


def test_long_plain_values_are_still_truncated() -> None:
    row = _attributes(_kv("long", "y" * 100), _kv("list", ["y" * 100]))
    assert row.attributes == {"long": "y" * 40, "list": ["y" * 40]}
