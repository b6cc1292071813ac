"""A pipeline's DAG laid out for the dashboard's inline SVG: layers by longest path from a root."""

from __future__ import annotations

from dataclasses import dataclass

NODE_W, NODE_H = 170, 44
GAP_X, GAP_Y, MARGIN = 60, 18, 8


@dataclass(frozen=True)
class Box:
    name: str
    step: str
    state: str
    x: int
    y: int


@dataclass(frozen=True)
class Arrow:
    x1: int
    y1: int
    x2: int
    y2: int


@dataclass(frozen=True)
class Drawing:
    width: int
    height: int
    boxes: list[Box]
    arrows: list[Arrow]


def layout(
    nodes: dict[str, str], edges: list[list[str]] | list[tuple[str, str]], states: dict[str, str]
) -> Drawing:
    """Boxes for ``nodes`` (name -> step) in columns by dependency depth, arrows for ``edges``
    ([parent, child]); ``states`` (name -> state) colours them, "pending" when absent.

    Edges naming unknown nodes are left out; a cycle (refused by config validation) would only
    stop deepening the nodes on it.
    """
    depth = dict.fromkeys(nodes, 0)
    pairs = [(a, b) for a, b in edges if a in nodes and b in nodes]
    for _ in range(len(nodes)):
        changed = False
        for parent, child in pairs:
            if depth[child] < depth[parent] + 1:
                depth[child] = depth[parent] + 1
                changed = True
        if not changed:
            break
    columns: dict[int, list[str]] = {}
    for name in nodes:  # definition order within a column
        columns.setdefault(depth[name], []).append(name)
    at: dict[str, tuple[int, int]] = {}
    for col, names in columns.items():
        for row, name in enumerate(names):
            at[name] = (MARGIN + col * (NODE_W + GAP_X), MARGIN + row * (NODE_H + GAP_Y))
    boxes = [Box(n, nodes[n], states.get(n, "pending"), *at[n]) for n in nodes]
    arrows = [
        Arrow(at[a][0] + NODE_W, at[a][1] + NODE_H // 2, at[b][0] - 4, at[b][1] + NODE_H // 2)
        for a, b in pairs
    ]
    width = MARGIN * 2 + (max(columns, default=0) + 1) * (NODE_W + GAP_X) - GAP_X
    height = MARGIN * 2 + max((len(v) for v in columns.values()), default=1) * (NODE_H + GAP_Y)
    return Drawing(width, height - GAP_Y, boxes, arrows)
