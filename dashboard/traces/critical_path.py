"""The critical path of a trace: the chain of span segments that sets its end-to-end time.

The usual algorithm (Jaeger's, and the one in most tracing UIs): start at the root's
end and walk back. The child that finishes last is on the path; below it the same
walk repeats; back in the parent, the cursor moves to that child's start and the next
child on the path is the last one that finishes *before* the cursor. Children that
overlap the chosen one (end after the cursor) are hidden behind it and skipped. The
parent's own time between its children (and before the first one) is on the path too.

Clock skew and orphans: a child is clipped to its parent's window (a child that ends
after its parent, or starts before it, counts only inside the parent); a child wholly
outside its parent's window is ignored. Spans whose parent is missing are roots, and
the trace's roots are children of a virtual root spanning the whole trace, so several
roots (orphans) are walked the same way, except that a root overlapping the one
chosen after it is cut at the cursor rather than skipped (the virtual root has no
time of its own to fill the gap with). The walk is iterative: a 10,000-deep chain
does not hit Python's recursion limit.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class PathSpan:
    span_id: str
    parent_span_id: str | None
    start_us: int
    end_us: int


@dataclass(frozen=True, slots=True)
class Segment:
    """``span_id`` is on the critical path from ``start_us`` to ``end_us``."""

    span_id: str
    start_us: int
    end_us: int


@dataclass(slots=True)
class _Frame:
    span_id: str | None
    lo: int
    hi: int
    cursor: int
    kids: list[PathSpan]
    index: int = 0


def _sorted_kids(kids: list[PathSpan], hi: int) -> list[PathSpan]:
    # latest (clipped) end first; among equal ends the later start first
    return sorted(kids, key=lambda k: (min(k.end_us, hi), k.start_us), reverse=True)


def critical_path(spans: Iterable[PathSpan]) -> list[Segment]:
    """Segments of the critical path, earliest first (a span may have several)."""
    by_id: dict[str, PathSpan] = {}
    for span in spans:
        by_id.setdefault(span.span_id, span)
    if not by_id:
        return []
    children: dict[str, list[PathSpan]] = {}
    roots: list[PathSpan] = []
    for span in by_id.values():
        parent = span.parent_span_id
        if parent is not None and parent in by_id and parent != span.span_id:
            children.setdefault(parent, []).append(span)
        else:
            roots.append(span)
    lo = min(span.start_us for span in by_id.values())
    hi = max(max(span.end_us, span.start_us) for span in by_id.values())
    segments: list[Segment] = []
    visited: set[str] = set()
    stack = [_Frame(None, lo, hi, hi, _sorted_kids(roots, hi))]
    while stack:
        frame = stack[-1]
        picked: tuple[PathSpan, int, int] | None = None
        while frame.index < len(frame.kids):
            kid = frame.kids[frame.index]
            frame.index += 1
            if kid.span_id in visited:
                continue
            start, end = max(kid.start_us, frame.lo), min(max(kid.end_us, kid.start_us), frame.hi)
            if frame.span_id is None and start < frame.cursor < end:
                end = frame.cursor  # the virtual root has no time of its own to show
            if start > end or end > frame.cursor:
                continue  # outside the parent's window, or hidden behind a later child
            picked = (kid, start, end)
            break
        if picked is None:
            if frame.span_id is not None and frame.cursor > frame.lo:
                segments.append(Segment(frame.span_id, frame.lo, frame.cursor))
            stack.pop()
            continue
        kid, start, end = picked
        visited.add(kid.span_id)
        if frame.span_id is not None and frame.cursor > end:
            segments.append(Segment(frame.span_id, end, frame.cursor))
        frame.cursor = start
        kids = _sorted_kids(children.get(kid.span_id, []), end)
        stack.append(_Frame(kid.span_id, start, end, end, kids))
    segments.reverse()
    return segments
