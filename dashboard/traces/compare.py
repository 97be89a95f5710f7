"""Two traces side by side: spans matched by their path of (service, name) from the root.

A span's key is its parent's key plus ``(service, name, n)`` (stored as the parent
key's number and that triple, so a deep trace costs memory linear in its spans), where
``n`` counts the earlier siblings with the same service and name (the third ``db.query`` under the
same parent matches the third one in the other trace). Matched spans are compared on
duration; a change beyond ``threshold`` (a fraction: 0.2 is 20%) marks them slower or
faster. Spans present in one trace only are "only in A" / "only in B". Rows come out
depth-first over the union of both trees, A's order first.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from dashboard.durations import format_us

from .waterfall import TraceDetail, WaterfallRow

DEFAULT_THRESHOLD = 0.2

# (number of the parent's key, 0 at the root; service; name; n)
_Key = tuple[int, str, str, int]


class Change(Enum):
    SAME = "same"
    SLOWER = "slower"
    FASTER = "faster"
    ONLY_A = "only-a"
    ONLY_B = "only-b"


@dataclass(frozen=True, slots=True)
class CompareRow:
    service: str
    name: str
    depth: int
    change: Change
    a: WaterfallRow | None
    b: WaterfallRow | None
    # (left %, width %) of each side's bar, both on the scale of the longer trace
    a_bar: tuple[str, str] | None = None
    b_bar: tuple[str, str] | None = None

    @property
    def ratio(self) -> float | None:
        """B's duration over A's, when both exist and A's is not zero."""
        if self.a is None or self.b is None or self.a.duration_us <= 0:
            return None
        return self.b.duration_us / self.a.duration_us

    @property
    def delta(self) -> str:
        if self.a is None or self.b is None:
            return ""
        diff = self.b.duration_us - self.a.duration_us
        sign = "+" if diff >= 0 else "−"
        ratio = self.ratio
        percent = f" ({(ratio - 1) * 100:+.0f}%)" if ratio is not None else ""
        return f"{sign}{format_us(abs(diff))}{percent}"


@dataclass(slots=True)
class Comparison:
    a: TraceDetail
    b: TraceDetail
    threshold: float
    rows: list[CompareRow] = field(default_factory=list)

    def count(self, change: Change) -> int:
        return sum(row.change is change for row in self.rows)

    @property
    def missing(self) -> int:
        return self.count(Change.ONLY_A)

    @property
    def extra(self) -> int:
        return self.count(Change.ONLY_B)

    @property
    def summary(self) -> dict[str, int]:
        return {change.value: self.count(change) for change in Change}


def _keys(detail: TraceDetail, numbers: dict[_Key, int]) -> dict[_Key, WaterfallRow]:
    """Each row's key; rows are depth-first, so a parent is keyed before its children.
    ``numbers`` (shared by both traces) numbers the keys from 1; a key's parent always
    has a smaller number."""
    by_span: dict[str, int] = {}
    seen: dict[tuple[int, str, str], int] = {}
    out: dict[_Key, WaterfallRow] = {}
    for row in detail.rows:  # children come in start order within their parent
        parent = by_span.get(row.parent_span_id or "", 0)
        n = seen.get((parent, row.service, row.name), 0)
        seen[(parent, row.service, row.name)] = n + 1
        key = (parent, row.service, row.name, n)
        by_span[row.span_id] = numbers.setdefault(key, len(numbers) + 1)
        out[key] = row
    return out


def _change(a: WaterfallRow | None, b: WaterfallRow | None, threshold: float) -> Change:
    if b is None:
        return Change.ONLY_A
    if a is None:
        return Change.ONLY_B
    if a.duration_us <= 0:
        return Change.SLOWER if b.duration_us > 0 else Change.SAME
    ratio = b.duration_us / a.duration_us
    if ratio > 1 + threshold:
        return Change.SLOWER
    if ratio < 1 - threshold:
        return Change.FASTER
    return Change.SAME


def compare(a: TraceDetail, b: TraceDetail, *, threshold: float = DEFAULT_THRESHOLD) -> Comparison:
    if not 0 <= threshold < 100:
        raise ValueError(f"threshold must be a fraction in [0, 100), got {threshold!r}")
    numbers: dict[_Key, int] = {}
    in_a, in_b = _keys(a, numbers), _keys(b, numbers)
    children: dict[int, list[_Key]] = {}
    for key in [*in_a, *(k for k in in_b if k not in in_a)]:
        children.setdefault(key[0], []).append(key)
    result = Comparison(a, b, threshold)
    scale = max(a.duration_us, b.duration_us, 1)
    a0 = min((row.start_us for row in a.rows), default=0)
    b0 = min((row.start_us for row in b.rows), default=0)

    def bar(row: WaterfallRow | None, t0: int) -> tuple[str, str] | None:
        if row is None:
            return None
        return f"{(row.start_us - t0) * 100 / scale:.3f}", f"{row.duration_us * 100 / scale:.3f}"

    stack = [(key, 0) for key in reversed(children.get(0, []))]
    while stack:
        key, depth = stack.pop()
        row_a, row_b = in_a.get(key), in_b.get(key)
        _, service, name, _ = key
        change = _change(row_a, row_b, threshold)
        result.rows.append(
            CompareRow(service, name, depth, change, row_a, row_b, bar(row_a, a0), bar(row_b, b0))
        )
        stack.extend((child, depth + 1) for child in reversed(children.get(numbers[key], [])))
    return result
