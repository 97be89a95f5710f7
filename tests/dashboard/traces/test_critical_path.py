"""The critical path on crafted span trees: sequential, parallel, overlapping, skewed, orphaned."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from dashboard.traces.critical_path import PathSpan, Segment, critical_path


def s(span_id: str, parent: str | None, start: int, end: int) -> PathSpan:
    return PathSpan(span_id, parent, start, end)


def path(*spans: PathSpan) -> list[tuple[str, int, int]]:
    return [(seg.span_id, seg.start_us, seg.end_us) for seg in critical_path(spans)]


def test_a_lone_span_is_its_own_critical_path() -> None:
    assert path(s("r", None, 0, 100)) == [("r", 0, 100)]


def test_no_spans_no_path() -> None:
    assert critical_path([]) == []


def test_sequential_children_are_all_on_the_path_with_the_parents_gaps() -> None:
    spans = (
        s("r", None, 0, 100),
        s("a", "r", 10, 40),
        s("b", "r", 40, 70),
        s("c", "r", 75, 90),
    )
    assert path(*spans) == [
        ("r", 0, 10),
        ("a", 10, 40),
        ("b", 40, 70),
        ("r", 70, 75),
        ("c", 75, 90),
        ("r", 90, 100),
    ]


def test_of_parallel_children_only_the_last_to_finish_is_on_the_path() -> None:
    spans = (
        s("r", None, 0, 100),
        s("fast", "r", 10, 30),
        s("slow", "r", 10, 80),
        s("mid", "r", 10, 50),
    )
    assert path(*spans) == [("r", 0, 10), ("slow", 10, 80), ("r", 80, 100)]


def test_a_child_overlapping_the_chosen_one_is_skipped_an_earlier_one_is_not() -> None:
    # b is last to finish; a ends after b starts (hidden behind b); first ends before.
    spans = (
        s("r", None, 0, 100),
        s("first", "r", 0, 20),
        s("a", "r", 25, 60),
        s("b", "r", 50, 100),
    )
    assert path(*spans) == [("first", 0, 20), ("r", 20, 50), ("b", 50, 100)]


def test_the_walk_descends_into_grandchildren() -> None:
    spans = (
        s("r", None, 0, 100),
        s("a", "r", 0, 90),
        s("a1", "a", 10, 30),
        s("a2", "a", 30, 80),
        s("side", "r", 0, 50),
    )
    assert path(*spans) == [
        ("a", 0, 10),
        ("a1", 10, 30),
        ("a2", 30, 80),
        ("a", 80, 90),
        ("r", 90, 100),
    ]


def test_a_child_ending_after_its_parent_is_clipped_to_the_parent() -> None:
    # clock skew: the child's host runs ahead
    spans = (s("r", None, 0, 100), s("c", "r", 60, 130))
    assert path(*spans) == [("r", 0, 60), ("c", 60, 100)]


def test_a_child_starting_before_its_parent_is_clipped_to_the_parent() -> None:
    spans = (s("r", None, 100, 200), s("c", "r", 50, 150))
    assert path(*spans) == [("c", 100, 150), ("r", 150, 200)]


def test_a_child_wholly_outside_its_parent_is_ignored() -> None:
    spans = (s("r", None, 0, 100), s("late", "r", 150, 300), s("c", "r", 10, 20))
    assert path(*spans) == [("r", 0, 10), ("c", 10, 20), ("r", 20, 100)]


def test_orphans_are_roots_and_the_last_to_finish_leads_the_path() -> None:
    # the parent of "orphan" never arrived
    spans = (s("r", None, 0, 100), s("orphan", "missing", 50, 160), s("r1", "r", 10, 20))
    assert path(*spans) == [("r", 0, 10), ("r1", 10, 20), ("r", 20, 50), ("orphan", 50, 160)]


def test_a_parent_cycle_without_a_root_yields_nothing_and_does_not_hang() -> None:
    spans = (s("a", "b", 0, 10), s("b", "a", 0, 10))
    assert critical_path(spans) == []


def test_a_very_deep_chain_does_not_hit_the_recursion_limit() -> None:
    depth = 5_000
    spans = [s("0", None, 0, 2 * depth)]
    spans += [s(str(i), str(i - 1), i, 2 * depth - i) for i in range(1, depth)]
    segments = critical_path(spans)
    assert segments[0] == Segment("0", 0, 1)
    assert len({seg.span_id for seg in segments}) == depth


def test_duplicate_span_ids_count_once() -> None:
    spans = (s("r", None, 0, 100), s("r", None, 0, 100), s("c", "r", 10, 20))
    assert path(*spans) == [("r", 0, 10), ("c", 10, 20), ("r", 20, 100)]


@st.composite
def trees(draw: st.DrawFn) -> list[PathSpan]:
    n = draw(st.integers(1, 25))
    spans = []
    for i in range(n):
        parent = None if i == 0 else str(draw(st.integers(0, i - 1)))
        start = draw(st.integers(0, 1_000))
        spans.append(s(str(i), parent, start, start + draw(st.integers(0, 500))))
    return spans


@given(trees())
def test_the_path_is_ordered_without_overlap_and_within_the_trace(spans: list[PathSpan]) -> None:
    segments = critical_path(spans)
    lo = min(x.start_us for x in spans)
    hi = max(x.end_us for x in spans)
    by_id = {x.span_id: x for x in spans}
    previous_end = lo
    for segment in segments:
        assert previous_end <= segment.start_us < segment.end_us <= hi
        span = by_id[segment.span_id]
        assert span.start_us <= segment.start_us and segment.end_us <= span.end_us
        previous_end = segment.end_us


@given(trees())
def test_the_root_of_a_well_nested_tree_ends_the_path(spans: list[PathSpan]) -> None:
    # Clamp every child inside its parent: then the path covers the root exactly.
    fixed: dict[str, PathSpan] = {}
    for x in spans:
        if x.parent_span_id is None:
            fixed[x.span_id] = x
            continue
        p = fixed[x.parent_span_id]
        start = min(max(x.start_us, p.start_us), p.end_us)
        fixed[x.span_id] = s(x.span_id, x.parent_span_id, start, min(x.end_us, p.end_us))
    segments = critical_path(fixed.values())
    root = fixed["0"]
    covered = sum(seg.end_us - seg.start_us for seg in segments)
    assert covered == root.end_us - root.start_us
    if segments:
        assert segments[0].start_us == root.start_us
        assert segments[-1].end_us == root.end_us
