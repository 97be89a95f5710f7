"""Structural diff of two decoded states (deepdiff), and its folded HTML view.

deepdiff walks every leaf in Python (~0.5 s for two 1 MB agent states), so equal
subtrees are pruned first with ``==`` confirmed by their JSON bytes (C speed, a few ms;
``==`` alone says ``0 == False``): an equal dict member is dropped, and a list keeps only
its differing positions, as a dict keyed by index. That is exact because deepdiff pairs
list items by position, except when both lists hold only scalars (it aligns those with
difflib): such lists are passed whole (an equal prefix replaced by placeholders
would change difflib's alignment, and repeated placeholders make difflib quadratic).
deepdiff then sees only what differs; its paths read the same (``[3]`` is both a
list index and an int key), so the result equals deepdiff's on the whole states (a
property test checks it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson
from deepdiff import DeepDiff
from deepdiff.helper import NotPresent
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

from .jsontree import PathPart, json_path, preview

Kind = Literal["added", "removed", "changed"]

_KINDS: dict[str, Kind] = {
    "dictionary_item_added": "added",
    "iterable_item_added": "added",
    "attribute_added": "added",
    "dictionary_item_removed": "removed",
    "iterable_item_removed": "removed",
    "attribute_removed": "removed",
    "values_changed": "changed",
    "type_changes": "changed",
}
MAX_RENDERED = 1000


@dataclass(frozen=True, slots=True)
class Change:
    kind: Kind
    parts: tuple[PathPart, ...]
    old: Any = None
    new: Any = None

    @property
    def path(self) -> str:
        return json_path(self.parts)

    @property
    def old_text(self) -> str:
        return "" if self.kind == "added" else preview(self.old)

    @property
    def new_text(self) -> str:
        return "" if self.kind == "removed" else preview(self.new)


@dataclass(frozen=True, slots=True)
class StateDiff:
    changes: list[Change] = field(default_factory=list)

    @property
    def added(self) -> list[Change]:
        return [c for c in self.changes if c.kind == "added"]

    @property
    def removed(self) -> list[Change]:
        return [c for c in self.changes if c.kind == "removed"]

    @property
    def changed(self) -> list[Change]:
        return [c for c in self.changes if c.kind == "changed"]

    @property
    def identical(self) -> bool:
        return not self.changes


def _same(a: Any, b: Any) -> bool:
    # == says 0 == False and 1 == 1.0 (also deep inside containers); JSON and deepdiff
    # do not. Equal values are confirmed by their bytes, each subtree once.
    return bool(a == b) and orjson.dumps(a) == orjson.dumps(b)


def _prune(a: Any, b: Any) -> tuple[Any, Any]:
    if isinstance(a, dict) and isinstance(b, dict):
        keep_a: dict[Any, Any] = {}
        keep_b: dict[Any, Any] = {}
        for key, value in a.items():
            if key not in b:
                keep_a[key] = value
            elif not _same(value, b[key]):
                keep_a[key], keep_b[key] = _prune(value, b[key])
        for key, value in b.items():
            if key not in a:
                keep_b[key] = value
        return keep_a, keep_b
    if isinstance(a, list) and isinstance(b, list) and not (_scalars(a) and _scalars(b)):
        # deepdiff pairs these items by position: keep the differing positions.
        items_a: dict[int, Any] = {}
        items_b: dict[int, Any] = {}
        for index in range(max(len(a), len(b))):
            if index >= len(b):
                items_a[index] = a[index]
            elif index >= len(a):
                items_b[index] = b[index]
            elif not _same(a[index], b[index]):
                items_a[index], items_b[index] = _prune(a[index], b[index])
        return items_a, items_b
    return a, b


def _scalars(items: list[Any]) -> bool:
    return not any(isinstance(item, dict | list) for item in items)


def diff_states(a: Any, b: Any) -> StateDiff:
    """What changed from state ``a`` to state ``b``: added, removed and changed paths."""
    if _same(a, b):
        return StateDiff()
    left, right = _prune(a, b)
    # Always report the keys that differ, never "the whole dict changed".
    tree = DeepDiff(left, right, view="tree", threshold_to_diff_deeper=0)
    changes: list[Change] = []
    for report, levels in tree.items():
        kind = _KINDS.get(report)
        if kind is None:
            continue
        for level in levels:
            parts = tuple(level.path(output_format="list"))
            old = None if isinstance(level.t1, NotPresent) else level.t1
            new = None if isinstance(level.t2, NotPresent) else level.t2
            changes.append(Change(kind=kind, parts=parts, old=old, new=new))
    changes.sort(key=_order)
    return StateDiff(changes=changes)


def _order(change: Change) -> list[tuple[int, int, str]]:
    return [(0, p, "") if isinstance(p, int) else (1, 0, p) for p in change.parts]


def _prefixes(changes: Sequence[Change]) -> set[tuple[PathPart, ...]]:
    prefixes: set[tuple[PathPart, ...]] = set()
    for change in changes:
        for end in range(len(change.parts)):
            prefixes.add(change.parts[:end])
    return prefixes


def render_folded(
    a: Any, b: Any, diff: StateDiff, *, max_changes: int = MAX_RENDERED
) -> SafeString:
    """Both states as one tree: changed branches open, unchanged subtrees folded away."""
    shown = diff.changes[:max_changes]
    at = {change.parts: change for change in shown}
    branches = _prefixes(shown)
    out: list[str] = ['<ul class="json-tree diff-tree">']

    def fold(names: list[str]) -> None:
        if names:
            listed = ", ".join(names[:5]) + (", …" if len(names) > 5 else "")
            out.append(
                f'<li class="df-same">… {len(names)} unchanged '
                f'<span class="jt-meta">({escape(listed)})</span></li>'
            )

    def node(key: PathPart | None, left: Any, right: Any, parts: tuple[PathPart, ...]) -> None:
        label = '<span class="jt-key">' + escape("$" if key is None else str(key)) + "</span>"
        change = at.get(parts)
        if change is not None:
            if change.kind == "added":
                body = f'<ins class="df-new">{escape(change.new_text)}</ins>'
            elif change.kind == "removed":
                body = f'<del class="df-old">{escape(change.old_text)}</del>'
            else:
                body = (
                    f'<del class="df-old">{escape(change.old_text)}</del> → '
                    f'<ins class="df-new">{escape(change.new_text)}</ins>'
                )
            out.append(
                f'<li class="df-{change.kind}" data-path="{escape(change.path)}">{label}: '
                f"{body}</li>"
            )
            return
        out.append(f'<li class="df-branch"><details open><summary>{label}</summary><ul>')
        if isinstance(left, dict) and isinstance(right, dict):
            keys: list[PathPart] = list(dict.fromkeys([*left, *right]))
        elif isinstance(left, list) and isinstance(right, list):
            keys = list(range(max(len(left), len(right))))
        else:
            keys = []
        same: list[str] = []
        for child in keys:
            child_parts = (*parts, child)
            if child_parts in at or child_parts in branches:
                fold(same)
                same = []
                node(child, _get(left, child), _get(right, child), child_parts)
            else:
                same.append(str(child))
        fold(same)
        out.append("</ul></details></li>")

    if diff.changes:
        node(None, a, b, ())
    out.append("</ul>")
    return mark_safe("".join(out))


def _get(container: Any, key: PathPart) -> Any:
    try:
        return container[key]
    except (KeyError, IndexError, TypeError):
        return None
