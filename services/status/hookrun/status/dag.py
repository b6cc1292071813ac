"""A pipeline's DAG laid out for the dashboard's inline SVG: layers by longest path from a root."""

from __future__ import annotations

from dataclasses import dataclass

NODE_H = 44
GAP_X, GAP_Y, MARGIN = 60, 18, 8
#: Boxes are as wide as their longest text needs, within these bounds; longer text is cut with
#: an ellipsis (the node's <title> holds all of it).
NODE_W_MIN, NODE_W_MAX = 170, 330
#: Padding left and right of a box's text.
PAD_X = 10
#: The widest average advance of the node text (12 px system-ui, capitals such as TIMED_OUT
#: included): the width is worked out here, as the page measures nothing.
CHAR_W = 7


@dataclass(frozen=True)
class Box:
    name: str
    step: str
    state: str
    x: int
    y: int
    #: The two lines drawn in the box, cut to its width.
    name_text: str
    state_text: str


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
    node_width: int
    boxes: list[Box]
    arrows: list[Arrow]


def _fitted(text: str, width: int) -> str:
    """``text`` cut with an ellipsis to what ``width`` pixels of box hold."""
    room = (width - 2 * PAD_X) // CHAR_W
    return text if len(text) <= room else text[: room - 1] + "…"


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
    state = {n: states.get(n, "pending") for n in nodes}
    texts = {n: (n, f"{state[n]} \u00b7 {nodes[n]}") for n in nodes}
    longest = max((len(t) for pair in texts.values() for t in pair), default=0)
    node_w = min(max(NODE_W_MIN, longest * CHAR_W + 2 * PAD_X), NODE_W_MAX)
    at: dict[str, tuple[int, int]] = {}
    for col, names in columns.items():
        for row, name in enumerate(names):
            at[name] = (MARGIN + col * (node_w + GAP_X), MARGIN + row * (NODE_H + GAP_Y))
    boxes = [
        Box(n, nodes[n], state[n], *at[n], *(_fitted(t, node_w) for t in texts[n])) for n in nodes
    ]
    arrows = [
        Arrow(at[a][0] + node_w, at[a][1] + NODE_H // 2, at[b][0] - 4, at[b][1] + NODE_H // 2)
        for a, b in pairs
    ]
    width = MARGIN * 2 + (max(columns, default=0) + 1) * (node_w + GAP_X) - GAP_X
    height = MARGIN * 2 + max((len(v) for v in columns.values()), default=1) * (NODE_H + GAP_Y)
    return Drawing(width, height - GAP_Y, node_w, boxes, arrows)
