"""A layered left-to-right layout for the map, drawn as server-side SVG.

Layer of a service = the longest chain of calls leading to it (back edges of cycles are
ignored); within a layer services are sorted by name, with the order then improved by a
few barycentre passes so that edges cross less. Small maps (tens of services) only.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from .selectors import Edge

NODE_W, NODE_H = 180, 44
COL_GAP, ROW_GAP, MARGIN = 250, 44, 24


@dataclass(frozen=True, slots=True)
class NodeBox:
    name: str
    label: str
    x: int
    y: int
    w: int = NODE_W
    h: int = NODE_H


@dataclass(frozen=True, slots=True)
class EdgeLine:
    edge: Edge
    path: str
    label_x: int
    label_y: int
    backward: bool


@dataclass(frozen=True, slots=True)
class Drawing:
    width: int
    height: int
    nodes: tuple[NodeBox, ...]
    lines: tuple[EdgeLine, ...]


def layers(services: list[str], edges: list[tuple[str, str]]) -> dict[str, int]:
    """Longest-path layer of each service, with cycles broken by a depth-first search."""
    out: dict[str, list[str]] = defaultdict(list)
    for caller, callee in edges:
        if caller != callee:
            out[caller].append(callee)
    order: list[str] = []
    state: dict[str, int] = {}  # 1 visiting, 2 done
    forward: set[tuple[str, str]] = set()

    def visit(node: str) -> None:
        # Iterative DFS: a long chain of services must not hit the recursion limit.
        stack = [(node, iter(sorted(out[node])))]
        state[node] = 1
        while stack:
            current, children = stack[-1]
            child = next(children, None)
            if child is None:
                state[current] = 2
                order.append(current)
                stack.pop()
            elif state.get(child) == 1:
                continue  # a back edge: ignored for layering
            else:
                forward.add((current, child))
                if child not in state:
                    state[child] = 1
                    stack.append((child, iter(sorted(out[child]))))

    for service in sorted(services):
        if service not in state:
            visit(service)
    layer = dict.fromkeys(services, 0)
    for node in reversed(order):  # topological order of the forward edges
        for child in out[node]:
            if (node, child) in forward:
                layer[child] = max(layer[child], layer[node] + 1)
    return layer


def _short(name: str, limit: int = 22) -> str:
    return name if len(name) <= limit else name[: limit - 1] + "…"


def draw(services: list[str], edges: list[Edge]) -> Drawing:
    layer = layers(services, [(e.caller, e.callee) for e in edges])
    columns: dict[int, list[str]] = defaultdict(list)
    for service in sorted(services):
        columns[layer[service]].append(service)
    position = {name: i for column in columns.values() for i, name in enumerate(column)}
    callers: dict[str, list[str]] = defaultdict(list)
    for e in edges:
        callers[e.callee].append(e.caller)
    for _ in range(3):
        for index in sorted(columns)[1:]:

            def weight(name: str) -> float:
                near = [position[c] for c in callers[name] if layer[c] < layer[name]]
                return sum(near) / len(near) if near else position[name]

            columns[index].sort(key=lambda name: (weight(name), name))
            for i, name in enumerate(columns[index]):
                position[name] = i
    boxes: dict[str, NodeBox] = {}
    for index, column in columns.items():
        for row, name in enumerate(column):
            boxes[name] = NodeBox(
                name=name,
                label=_short(name),
                x=MARGIN + index * (NODE_W + COL_GAP),
                y=MARGIN + row * (NODE_H + ROW_GAP),
            )
    lines = []
    for e in edges:
        a, b = boxes[e.caller], boxes[e.callee]
        if e.caller == e.callee:
            continue  # never produced by the rollup; nothing sensible to draw
        backward = layer[e.callee] <= layer[e.caller]
        if not backward:
            x1, y1 = a.x + a.w, a.y + a.h // 2
            x2, y2 = b.x, b.y + b.h // 2
            bend = (x2 - x1) // 2
            path = f"M{x1},{y1} C{x1 + bend},{y1} {x2 - bend},{y2} {x2},{y2}"
            lx, ly = (x1 + x2) // 2, (y1 + y2) // 2 - 6
        else:
            # Same layer or backwards: loop below the boxes.
            x1, y1 = a.x + a.w // 2 + 20, a.y + a.h
            x2, y2 = b.x + b.w // 2 - 20, b.y + b.h
            dip = max(y1, y2) + ROW_GAP
            path = f"M{x1},{y1} C{x1},{dip} {x2},{dip} {x2},{y2}"
            lx, ly = (x1 + x2) // 2, dip - 4
        lines.append(EdgeLine(edge=e, path=path, label_x=lx, label_y=ly, backward=backward))
    width = MARGIN * 2 + (max(columns, default=0) + 1) * (NODE_W + COL_GAP) - COL_GAP
    rows = max((len(c) for c in columns.values()), default=1)
    height = MARGIN * 2 + rows * (NODE_H + ROW_GAP) + ROW_GAP
    return Drawing(width=width, height=height, nodes=tuple(boxes.values()), lines=tuple(lines))
