"""Decoded checkpoint states as HTML: a collapsible tree, paths, search.

Paths are JSONPath-like (``$.results.draft[0]``, ``$["odd key"]``): what the copy
button copies and what the diff and the search show. The tree is nested ``<details>``
(works without JavaScript); ``static/dashboard/checkpoints.js`` adds live filtering and
the copy buttons' behaviour.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

MAX_NODES = 5000
"""Nodes rendered in one tree; larger states are cut (search and download see all)."""
MAX_DEPTH = 64
"""Deeper containers are shown as compact JSON text."""
OPEN_DEPTH = 2
VALUE_CHARS = 300

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")

PathPart = str | int


def json_path(parts: Sequence[PathPart]) -> str:
    """``["results", "draft", 0]`` -> ``$.results.draft[0]``."""
    out = ["$"]
    for part in parts:
        if isinstance(part, int):
            out.append(f"[{part}]")
        elif _IDENTIFIER.match(part):
            out.append(f".{part}")
        else:
            out.append(f"[{orjson.dumps(part).decode()}]")
    return "".join(out)


def preview(value: Any, limit: int = VALUE_CHARS) -> str:
    """Compact JSON of ``value``, cut to ``limit`` characters."""
    text = orjson.dumps(value).decode()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "num"
    if isinstance(value, str):
        return "str"
    return "other"


def _children(value: Any) -> Iterator[tuple[PathPart, Any]]:
    if isinstance(value, dict):
        yield from value.items()
    else:
        yield from enumerate(value)


def _summary(value: Any) -> str:
    if isinstance(value, dict):
        return f"{{…}} {len(value)} key{'s' if len(value) != 1 else ''}"
    return f"[…] {len(value)} item{'s' if len(value) != 1 else ''}"


def _copy_button(path: str) -> str:
    return (
        f'<button type="button" class="jt-copy link" data-path="{escape(path)}" '
        f'title="copy {escape(path)}">copy path</button>'
    )


@dataclass(frozen=True, slots=True)
class Tree:
    html: SafeString
    nodes: int
    truncated: bool


def render_tree(state: Any, *, max_nodes: int = MAX_NODES) -> Tree:
    """``state`` as a ``<ul class="json-tree">`` of nested ``<details>``."""
    out: list[str] = ['<ul class="json-tree">']
    count = 0
    truncated = False

    def node(key: PathPart | None, value: Any, parts: list[PathPart]) -> None:
        nonlocal count, truncated
        if count >= max_nodes:
            truncated = True
            return
        count += 1
        path = json_path(parts)
        label = "$" if key is None else str(key)
        key_html = f'<span class="jt-key">{escape(label)}</span>'
        if isinstance(value, dict | list) and value and len(parts) < MAX_DEPTH:
            is_open = " open" if len(parts) < OPEN_DEPTH else ""
            out.append(
                f'<li class="jt-node"><details{is_open}><summary>{key_html} '
                f'<span class="jt-meta">{_summary(value)}</span> {_copy_button(path)}'
                "</summary><ul>"
            )
            for child_key, child in _children(value):
                node(child_key, child, [*parts, child_key])
                if truncated:
                    break
            out.append("</ul></details></li>")
            return
        out.append(
            f'<li class="jt-leaf">{key_html}: <span class="jt-v jt-{_kind(value)}">'
            f"{escape(preview(value))}</span> {_copy_button(path)}</li>"
        )

    node(None, state, [])
    out.append("</ul>")
    return Tree(html=mark_safe("".join(out)), nodes=count, truncated=truncated)


@dataclass(frozen=True, slots=True)
class Match:
    path: str
    value: str


def search_state(state: Any, query: str, *, limit: int = 200) -> tuple[list[Match], bool]:
    """Paths whose key or scalar value contains ``query`` (case-insensitive).

    Returns:
        Up to ``limit`` matches in document order, and whether there were more.
    """
    needle = query.casefold()
    matches: list[Match] = []
    stack: list[tuple[list[PathPart], Any]] = [([], state)]
    while stack:
        parts, value = stack.pop()
        key = parts[-1] if parts else None
        hit = isinstance(key, str) and needle in key.casefold()
        if isinstance(value, dict | list):
            children = list(_children(value))
            stack.extend(([*parts, k], v) for k, v in reversed(children))
        elif not hit:
            text = value if isinstance(value, str) else orjson.dumps(value).decode()
            hit = needle in text.casefold()
        if hit:
            if len(matches) >= limit:
                return matches, True
            matches.append(Match(path=json_path(parts), value=preview(value, 120)))
    return matches, False
