from __future__ import annotations

import random
from collections import defaultdict
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dashboard.servicemap import histogram, rollup
from dashboard.servicemap.models import EdgeMinute, RollupWatermark
from dashboard.traces.models import SpanKind, SpanRecord, SpanStatus
from tests.dashboard.servicemap.spans import T0, make

pytestmark = pytest.mark.django_db

MINUTE = int(T0.timestamp()) // 60


def _table() -> dict[tuple[int, str, str, str, str], tuple[int, int, int, dict[int, int]]]:
    return {
        (r.minute, r.caller, r.callee, r.breaker, r.peer_key): (
            r.calls,
            r.errors,
            r.duration_sum_us,
            histogram.merged([r.histogram]),
        )
        for r in EdgeMinute.objects.all()
    }


def _full_recompute() -> dict[tuple[int, str, str, str, str], tuple[int, int, int, dict[int, int]]]:
    """The oracle: every (parent, child) pair and every peer-naming CLIENT span, from scratch."""
    spans = list(SpanRecord.objects.all())
    by_id: dict[tuple[str, str], list[SpanRecord]] = defaultdict(list)
    for span in spans:
        by_id[(span.trace_id, span.span_id)].append(span)

    def peer(span: SpanRecord) -> tuple[str, str]:
        if span.kind != SpanKind.CLIENT:
            return "", ""
        for key in rollup.PEER_KEYS:
            value = span.attributes.get(key)
            if value not in (None, "") and str(value) != span.service:
                return str(value), key
            if value not in (None, ""):
                return "", ""
        return "", ""

    def breaker(span: SpanRecord) -> str:
        return next(
            (str(span.attributes[k]) for k in rollup.BREAKER_KEYS if span.attributes.get(k)), ""
        )

    out: dict[Any, list[Any]] = {}

    def add(key: Any, call: SpanRecord) -> None:
        row = out.setdefault(key, [0, 0, 0, {}])
        row[0] += 1
        row[1] += call.status == SpanStatus.ERROR
        row[2] += call.duration_us
        index = histogram.bucket_of(call.duration_us)
        row[3][index] = row[3].get(index, 0) + 1

    for span in spans:
        minute = int(span.start.timestamp()) // 60
        name, key = peer(span)
        if name:
            add((minute, span.service, name, breaker(span), key), span)
        for parent in by_id.get((span.trace_id, span.parent_span_id or ""), []):
            if parent.service != span.service and not peer(parent)[0]:
                add((minute, parent.service, span.service, breaker(parent), ""), span)
    return {key: (a, b, c, d) for key, (a, b, c, d) in out.items()}


def test_a_call_across_services_is_one_edge_with_the_childs_figures() -> None:
    root = make(service="gateway")
    make(service="orders", parent=root.span_id, duration_us=4000, error=True,
         start=T0 + timedelta(seconds=61))  # fmt: skip
    result = rollup.rollup()
    assert result.calls == 1 and result.caught_up
    assert _table() == {
        (MINUTE + 1, "gateway", "orders", "", ""): (1, 1, 4000, {histogram.bucket_of(4000): 1})
    }


def test_calls_within_one_service_are_not_edges() -> None:
    root = make(service="orders")
    make(service="orders", parent=root.span_id)
    rollup.rollup()
    assert _table() == {}


def test_a_parent_in_another_trace_does_not_pair() -> None:
    root = make(service="gateway", trace="b" * 32)
    make(service="orders", parent=root.span_id, trace="c" * 32)
    rollup.rollup()
    assert _table() == {}


def test_errors_and_calls_add_up_per_minute() -> None:
    root = make(service="gateway")
    for i in range(10):
        make(service="orders", parent=root.span_id, error=i < 3, duration_us=1000 * (i + 1))
    rollup.rollup()
    [(calls, errors, total, hist)] = _table().values()
    assert (calls, errors, total) == (10, 3, 55_000)
    assert sum(hist.values()) == 10


def test_a_client_span_naming_a_peer_is_an_edge_to_a_service_that_reports_nothing() -> None:
    make(service="gateway", kind=SpanKind.CLIENT, error=True, duration_us=900,
         attributes={"peer.service": "stripe", "breaker": "stripe"})  # fmt: skip
    make(service="gateway", kind=SpanKind.CLIENT, attributes={"server.address": "api.example"})
    make(service="gateway", kind=SpanKind.CLIENT, attributes={"peer.service": "gateway"})
    rollup.rollup()
    b900, b1000 = histogram.bucket_of(900), histogram.bucket_of(1000)
    assert _table() == {
        (MINUTE, "gateway", "stripe", "stripe", "peer.service"): (1, 1, 900, {b900: 1}),
        (MINUTE, "gateway", "api.example", "", "server.address"): (1, 0, 1000, {b1000: 1}),
    }


def test_a_peer_call_whose_callee_reports_spans_is_counted_once() -> None:
    client = make(service="gateway", kind=SpanKind.CLIENT, attributes={"peer.service": "orders"})
    make(service="orders", kind=SpanKind.SERVER, parent=client.span_id)
    rollup.rollup()
    assert list(_table()) == [(MINUTE, "gateway", "orders", "", "peer.service")]


def test_the_callers_breaker_attribute_names_the_edges_breaker() -> None:
    client = make(
        service="gateway", kind=SpanKind.CLIENT, attributes={"resilience.breaker": "orders-cb"}
    )
    make(service="orders", kind=SpanKind.SERVER, parent=client.span_id)
    rollup.rollup()
    assert list(_table()) == [(MINUTE, "gateway", "orders", "orders-cb", "")]


def test_a_parent_arriving_after_its_child_is_counted_by_the_next_run() -> None:
    parent_id = "00000000000000aa"
    make(service="orders", parent=parent_id, error=True)
    first = rollup.rollup()
    assert first.processed == 1 and _table() == {}
    make(service="gateway", span=parent_id)
    second = rollup.rollup()
    assert second.calls == 1
    assert _table() == {
        (MINUTE, "gateway", "orders", "", ""): (1, 1, 1000, {histogram.bucket_of(1000): 1})
    }
    assert rollup.rollup().calls == 0  # nothing counted twice


def test_a_run_only_reads_spans_past_the_watermark() -> None:
    root = make(service="gateway")
    make(service="orders", parent=root.span_id)
    rollup.rollup()
    make(service="search", parent=root.span_id)
    result = rollup.rollup()
    assert result.processed == 1
    assert RollupWatermark.objects.get().last_span_id == SpanRecord.objects.latest("id").id


def test_max_spans_bounds_a_run_and_says_it_is_not_caught_up() -> None:
    root = make(service="gateway")
    for _ in range(5):
        make(service="orders", parent=root.span_id)
    partial = rollup.rollup(max_spans=3, batch_size=2)
    assert (partial.processed, partial.caught_up) == (3, False)
    rest = rollup.rollup()
    assert (rest.processed, rest.caught_up) == (3, True)
    assert _table() == _full_recompute()


def test_a_run_that_lost_the_race_writes_nothing() -> None:
    root = make(service="gateway")
    make(service="orders", parent=root.span_id)
    RollupWatermark.objects.create(pk=1, last_span_id=0)
    deltas = rollup._Deltas()
    deltas.call("gateway", "orders", "", "", rollup._rows(SpanRecord.objects.all())[1])
    RollupWatermark.objects.filter(pk=1).update(last_span_id=2)  # another process moved it
    with pytest.raises(rollup._LostRace):
        rollup._save(0, 2, deltas)
    assert _table() == {}


def test_a_run_does_not_wait_for_one_already_going_when_told_not_to() -> None:
    make(service="orders", parent="00000000000000aa")
    with rollup._lock:
        result = rollup.rollup(blocking=False)
    assert result.skipped and result.processed == 0


def test_old_minutes_are_pruned() -> None:
    root = make(service="gateway")
    make(service="orders", parent=root.span_id)
    rollup.rollup(now=T0 + timedelta(minutes=rollup.KEEP_MINUTES - 1))
    assert _table()
    rollup.rollup(now=T0 + timedelta(minutes=rollup.KEEP_MINUTES + 1))
    assert _table() == {}


def test_rebuild_recomputes_from_every_stored_span() -> None:
    root = make(service="gateway")
    make(service="orders", parent=root.span_id)
    rollup.rollup()
    EdgeMinute.objects.update(calls=99)
    rollup.rebuild()
    assert _table() == _full_recompute()


def test_batch_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        rollup.rollup(batch_size=0)


SERVICES = ("gateway", "orders", "payments")


@st.composite
def _spans(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Spans of a few traces, each parent id pointing at a span of the trace (or nowhere)."""
    out = []
    for trace in range(draw(st.integers(1, 3))):
        count = draw(st.integers(1, 7))
        ids = [f"{trace:08x}{i:08x}" for i in range(count)]
        for i in range(count):
            kind = draw(st.sampled_from([SpanKind.INTERNAL, SpanKind.SERVER, SpanKind.CLIENT]))
            attributes: dict[str, Any] = {}
            if kind == SpanKind.CLIENT and draw(st.booleans()):
                attributes["peer.service"] = draw(st.sampled_from((*SERVICES, "stripe")))
            if draw(st.booleans()):
                attributes["breaker"] = draw(st.sampled_from(("cb1", "cb2")))
            parent = draw(st.sampled_from([None, "ffffffffffffffff", *ids[:i], *ids[i + 1 :]]))
            out.append(
                {
                    "trace": f"{trace:032x}",
                    "span": ids[i],
                    "parent": parent,
                    "service": draw(st.sampled_from(SERVICES)),
                    "kind": kind,
                    "attributes": attributes,
                    "error": draw(st.booleans()),
                    "duration_us": draw(st.integers(1, 10**7)),
                    "start": T0 + timedelta(seconds=draw(st.integers(0, 300))),
                }
            )
    return out


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spans=_spans(), seed=st.randoms(use_true_random=False), batch=st.integers(1, 5))
def test_incremental_rollups_over_any_arrival_order_equal_a_full_recompute(
    spans: list[dict[str, Any]], seed: random.Random, batch: int
) -> None:
    SpanRecord.objects.all().delete()
    EdgeMinute.objects.all().delete()
    RollupWatermark.objects.all().delete()
    seed.shuffle(spans)  # children before parents, and any other order
    position = 0
    while position < len(spans):
        step = seed.randint(1, len(spans) - position)
        for spec in spans[position : position + step]:
            make(**spec)
        position += step
        rollup.rollup(batch_size=batch, max_spans=seed.choice([None, 3, 50]))
    rollup.rollup()
    assert _table() == _full_recompute()
