"""The vtopo drawn as a PNG with a shaded box per host (DETER's `container_image.py --partitions` did this).

Each host gets a cell of a grid and its nodes are laid out inside it, so boxes never overlap and the partition
shows at a glance: nodes coloured by host, vhost VMs as dashed boxes inside their host, LANs as small square hubs
(in the host holding most of their members), and every edge that crosses hosts dashed red.

Laying out each host's subgraph on its own keeps the work small (30 hosts × 100 nodes: 30 small spring layouts,
not one of 3000). Beyond that: a host with more than SPRING_MAX vertices gets a spiral in breadth-first order;
more than MAX_HOSTS hosts → the busiest host and the hosts it trades most traffic with; more than MAX_DRAWN nodes →
each drawn host contributes its share of a breadth-first sample. The title says when any of these happens.
"""
from __future__ import annotations

import heapq
import math
from collections import Counter, deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nestbed.cli.embed_view import human_rate
from nestbed.embed import Embedding
from nestbed.kinds import registry
from nestbed.model.topology import Experiment, Node

MAX_DRAWN = 4000        # nodes drawn at most
MAX_HOSTS = 64          # host boxes drawn at most
SPRING_MAX = 300        # vertices per host laid out by force; above, a spiral in breadth-first order
MAX_LABELS = 80         # vertices drawn with their names at most
HUB = "#"               # hub vertex names: '#' + LAN name (node names cannot start with '#')
MARGIN = 0.05           # of a cell, between neighbouring host boxes
INNER = 0.12            # of a cell, between a host's box and its nodes (room for the host's name)
GOLDEN_ANGLE = math.pi * (3 - math.sqrt(5))
Point = tuple[float, float]


@dataclass(frozen=True)
class Drawing:
    path: str
    drawn: int              # nodes drawn (LAN hubs not counted)
    total: int              # nodes in the experiment
    hosts_drawn: int
    fast_hosts: int         # hosts laid out by the spiral instead of by force

    @property
    def sampled(self) -> bool:
        return self.drawn < self.total


@dataclass
class _Graph:
    host: dict[str, str]                  # vertex (node or LAN hub) → host
    edges: list[tuple[str, str]]
    adjacency: dict[str, list[str]]


def _graph(exp: Experiment, embedding: Embedding, nodes: dict[str, Node], host_rank: dict[str, int]) -> _Graph:
    host = {name: place.host for name, place in embedding.placement.items()}
    edges: list[tuple[str, str]] = []
    for segment in exp.segments.values():
        members = [end.node for end in segment.endpoints]
        if not all(m in host for m in members):          # a group named in a LAN: expand it
            members = [end.node for end in exp.segment_members(segment, nodes)]
        if segment.kind == "link":
            edges.append((members[0], members[1]))
            continue
        counts = Counter(host[m] for m in members)
        hub = HUB + segment.name
        host[hub] = min(counts, key=lambda h: (-counts[h], host_rank.get(h, 0)))
        edges.extend((hub, m) for m in members)
    adjacency: dict[str, list[str]] = {v: [] for v in host}
    for a, b in edges:
        adjacency[a].append(b)
        adjacency[b].append(a)
    return _Graph(host, edges, adjacency)


def _pick_hosts(per_host: dict[str, list[str]], graph: _Graph, limit: int) -> list[str]:
    """Up to `limit` hosts: all of them if they fit, else the busiest and, one at a time, the host with the most
    edges to those already picked (so the red edges drawn are the ones between the drawn hosts)."""
    used = [h for h, vertices in per_host.items() if vertices]
    if len(per_host) <= limit:
        return list(per_host)
    if len(used) <= limit:
        return used
    between: dict[str, Counter[str]] = {h: Counter() for h in used}
    for a, b in graph.edges:
        ha, hb = graph.host[a], graph.host[b]
        if ha != hb:
            between[ha][hb] += 1
            between[hb][ha] += 1
    rank = {h: i for i, h in enumerate(per_host)}
    start = max(used, key=lambda h: (len(per_host[h]), -rank[h]))
    picked: list[str] = []
    chosen: set[str] = set()
    weight: Counter[str] = Counter()
    queue: list[tuple[int, int, str]] = [(0, rank[start], start)]
    while len(picked) < limit:
        if not queue:        # the picked hosts trade with no other: go on in cluster order
            rest = next((h for h in used if h not in chosen), None)
            if rest is None:
                break
            queue.append((0, rank[rest], rest))
        _, _, host = heapq.heappop(queue)
        if host in chosen:
            continue
        chosen.add(host)
        picked.append(host)
        for other, count in between[host].items():
            if other not in chosen:
                weight[other] += count
                heapq.heappush(queue, (-weight[other], rank[other], other))
    return sorted(picked, key=lambda h: rank[h])


def _bfs_order(vertices: list[str], graph: _Graph, within: str) -> list[str]:
    """Vertices of one host in breadth-first order over the host's own edges, best-connected roots first."""
    seen: set[str] = set()
    order: list[str] = []
    for root in sorted(vertices, key=lambda v: -len(graph.adjacency[v])):
        if root in seen:
            continue
        seen.add(root)
        queue = deque([root])
        while queue:
            vertex = queue.popleft()
            order.append(vertex)
            for other in graph.adjacency[vertex]:
                if other not in seen and graph.host[other] == within:
                    seen.add(other)
                    queue.append(other)
    return order


def _sample(per_host: dict[str, list[str]], graph: _Graph, limit: int) -> dict[str, list[str]]:
    """Each host keeps its share of `limit` nodes, connected where possible (breadth-first), and their hubs."""
    total = sum(1 for vertices in per_host.values() for v in vertices if not v.startswith(HUB))
    if total <= limit:
        return per_host
    kept: dict[str, list[str]] = {}
    for host, vertices in per_host.items():
        real = sum(1 for v in vertices if not v.startswith(HUB))
        quota = max(1, limit * real // total) if real else 0
        chosen = []
        for vertex in _bfs_order(vertices, graph, host):
            if not vertex.startswith(HUB):
                if quota == 0:
                    continue
                quota -= 1
            chosen.append(vertex)
        kept[host] = chosen
    drawn = {v for vertices in kept.values() for v in vertices}
    return {host: [v for v in vertices if not v.startswith(HUB) or any(m in drawn for m in graph.adjacency[v])]
            for host, vertices in kept.items()}


# -- layout in the unit square ---------------------------------------------------------------------------------

def _spiral(order: list[str]) -> dict[str, Point]:
    """Sunflower spiral: consecutive vertices (breadth-first neighbours) land close together."""
    count = len(order)
    pos = {}
    for k, vertex in enumerate(order):
        radius = math.sqrt((k + 0.5) / count) / 2
        pos[vertex] = (0.5 + radius * math.cos(k * GOLDEN_ANGLE), 0.5 + radius * math.sin(k * GOLDEN_ANGLE))
    return pos


def _spring(vertices: list[str], graph: _Graph, host: str, vhost_of: dict[str, str | None],
            seed: int) -> dict[str, Point]:
    import networkx as nx

    if len(vertices) <= 2:
        return {v: (0.25 + 0.5 * i, 0.5) for i, v in enumerate(vertices)} if len(vertices) == 2 else \
            {vertices[0]: (0.5, 0.5)}
    sub = nx.Graph()
    sub.add_nodes_from(vertices)
    members = set(vertices)
    for vertex in vertices:
        for other in graph.adjacency[vertex]:
            if other in members and graph.host[other] == host:
                sub.add_edge(vertex, other, weight=1.0)
    for vertex in vertices:            # an invisible anchor per vhost VM pulls its processes together
        vhost = vhost_of.get(vertex)
        if vhost is not None:
            sub.add_edge(vertex, "\0" + vhost, weight=3.0)
    raw = nx.spring_layout(sub, seed=seed)
    return _unit({v: (float(raw[v][0]), float(raw[v][1])) for v in vertices})


def _unit(pos: dict[str, Point]) -> dict[str, Point]:
    """Scale positions into the unit square, keeping the aspect ratio."""
    xs = [p[0] for p in pos.values()]
    ys = [p[1] for p in pos.values()]
    span = max(max(xs) - min(xs), max(ys) - min(ys)) or 1.0
    x0 = (min(xs) + max(xs)) / 2 - span / 2
    y0 = (min(ys) + max(ys)) / 2 - span / 2
    return {v: ((x - x0) / span, (y - y0) / span) for v, (x, y) in pos.items()}


def _colour(index: int) -> tuple[float, float, float]:
    import colorsys

    from matplotlib import colormaps
    if index < 20:          # the strong half of tab20 first: neighbouring hosts get distinct colours
        r, g, b, _ = colormaps["tab20"](2 * index if index < 10 else 2 * (index - 10) + 1)
        return (r, g, b)
    return colorsys.hsv_to_rgb((index * 0.618034) % 1.0, 0.55, 0.85)


# -- drawing ----------------------------------------------------------------------------------------------------

@dataclass
class _Scene:
    per_host: dict[str, list[str]]        # drawn hosts → drawn vertices
    cells: dict[str, Point]               # host → lower-left corner of its cell
    pos: dict[str, Point]
    columns: int
    rows: int
    fast_hosts: int


def _scene(per_host: dict[str, list[str]], graph: _Graph, vhost_of: dict[str, str | None], seed: int) -> _Scene:
    """Cell (col, row) spans x ∈ [col, col+1], y ∈ [-row-1, -row]; each host's nodes fill its cell's inside."""
    columns = max(1, math.ceil(math.sqrt(len(per_host))))
    rows = max(1, math.ceil(len(per_host) / columns))
    pos: dict[str, Point] = {}
    cells: dict[str, Point] = {}
    fast = 0
    scale = 1 - 2 * INNER
    for index, (host, vertices) in enumerate(per_host.items()):
        x0, y0 = index % columns, -(index // columns) - 1
        cells[host] = (x0, y0)
        if not vertices:
            continue
        if len(vertices) > SPRING_MAX:
            fast += 1
            order = _bfs_order(vertices, graph, host)
            order.sort(key=lambda v: vhost_of.get(v) or "")     # stable: a vhost's processes stay together
            local = _spiral(order)
        else:
            local = _spring(vertices, graph, host, vhost_of, seed)
        for vertex, (x, y) in local.items():      # a little lower than centred: the host's name is on top
            pos[vertex] = (x0 + INNER + x * scale, y0 + INNER * 0.6 + y * scale)
    return _Scene(per_host, cells, pos, columns, rows, fast)


def _draw_hosts(ax: Any, scene: _Scene, colour: dict[str, tuple[float, float, float]], font: float,
                placed: dict[str, int]) -> None:
    from matplotlib.patches import FancyBboxPatch
    for host, (x0, y0) in scene.cells.items():
        drawn = sum(1 for v in scene.per_host[host] if not v.startswith(HUB))
        count = f"{drawn}" if drawn == placed.get(host, 0) else f"{drawn} of {placed.get(host, 0)}"
        ax.add_patch(FancyBboxPatch((x0 + MARGIN, y0 + MARGIN), 1 - 2 * MARGIN, 1 - 2 * MARGIN,
                                    boxstyle="round,pad=0,rounding_size=0.04", facecolor=(*colour[host], 0.13),
                                    edgecolor=colour[host], linewidth=1.2, zorder=0))
        ax.text(x0 + MARGIN + 0.03, y0 + 1 - MARGIN - 0.03, f"{host} ({count})", ha="left", va="top",
                fontsize=font, fontweight="bold", color="0.15", zorder=5)


def _draw_vhosts(ax: Any, scene: _Scene, vhost_of: dict[str, str | None], font: float) -> int:
    from matplotlib.patches import FancyBboxPatch
    members: dict[str, list[Point]] = {}
    for vertex, point in scene.pos.items():
        vhost = vhost_of.get(vertex)
        if vhost is not None:
            members.setdefault(vhost, []).append(point)
    pad = 0.025
    for vhost, points in members.items():
        xs, ys = [p[0] for p in points], [p[1] for p in points]
        ax.add_patch(FancyBboxPatch((min(xs) - pad, min(ys) - pad), max(xs) - min(xs) + 2 * pad,
                                    max(ys) - min(ys) + 2 * pad, boxstyle="round,pad=0,rounding_size=0.02",
                                    facecolor="none", edgecolor="0.35", linestyle="--", linewidth=0.7, zorder=1))
        if len(members) <= MAX_LABELS:
            ax.text(min(xs) - pad, max(ys) + pad, vhost, fontsize=font * 0.6, color="0.3", va="bottom", zorder=5)
    return len(members)


def _draw_edges(ax: Any, scene: _Scene, graph: _Graph) -> None:
    from matplotlib.collections import LineCollection
    pos = scene.pos
    inside: list[list[Point]] = []
    across: list[list[Point]] = []
    for a, b in graph.edges:
        if a in pos and b in pos:
            (inside if graph.host[a] == graph.host[b] else across).append([pos[a], pos[b]])
    width = 0.6 if len(inside) < 5000 else 0.3
    ax.add_collection(LineCollection(inside, colors="0.55", linewidths=width, zorder=2))
    ax.add_collection(LineCollection(across, colors="red", linewidths=width + 0.2, linestyles="dashed",
                                     alpha=0.7, zorder=3))


def _draw_vertices(ax: Any, scene: _Scene, graph: _Graph, nodes: dict[str, Node],
                   colour: dict[str, tuple[float, float, float]], font: float, cell_inches: float) -> None:
    pos = scene.pos
    size = max(4.0, min(60.0, 1000 * cell_inches / max(1, len(pos))))
    for name in registry.names():            # one marker per kind, as the kind draws itself
        kind = registry.get(name)
        chosen = [v for v in pos if not v.startswith(HUB) and nodes[v].kind == name]
        if chosen:
            ax.scatter([pos[v][0] for v in chosen], [pos[v][1] for v in chosen], marker=kind.marker,
                       s=size * kind.marker_scale, c=[colour[graph.host[v]] for v in chosen],
                       edgecolors="0.2", linewidths=0.4, zorder=4)
    hubs = [v for v in pos if v.startswith(HUB)]
    if hubs:
        ax.scatter([pos[v][0] for v in hubs], [pos[v][1] for v in hubs], s=size * 0.9, marker="s", c="0.25",
                   zorder=4)
    if len(pos) <= MAX_LABELS:
        for vertex, point in pos.items():
            ax.annotate(vertex.removeprefix(HUB), point, xytext=(3, 3), textcoords="offset points",
                        fontsize=font * 0.7, zorder=6)


def draw_partitions(exp: Experiment, embedding: Embedding, path: str | Path, seed: int = 0,
                    max_drawn: int = MAX_DRAWN, max_hosts: int = MAX_HOSTS) -> Drawing:
    """Write the PNG and say what was drawn. Matplotlib's Agg backend: no display needed."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    nodes = exp.expanded_nodes()
    tree = embedding.hosts()
    host_rank = {h: i for i, h in enumerate(tree)}
    graph = _graph(exp, embedding, nodes, host_rank)
    everything: dict[str, list[str]] = {h: [] for h in tree}
    for vertex, host in graph.host.items():
        everything.setdefault(host, []).append(vertex)
    hosts = _pick_hosts(everything, graph, max_hosts)
    per_host = _sample({h: everything[h] for h in hosts}, graph, max_drawn)
    vhost_of = {name: place.vhost for name, place in embedding.placement.items()}
    scene = _scene(per_host, graph, vhost_of, seed)

    cell_inches = max(1.6, min(4.0, 22 / scene.columns))
    fig, ax = plt.subplots(figsize=(max(6.0, scene.columns * cell_inches), max(4.5, scene.rows * cell_inches + 1)))
    ax.set_xlim(-0.02, scene.columns + 0.02)
    ax.set_ylim(-scene.rows - 0.02, 0.02)
    ax.set_aspect("equal")
    ax.axis("off")
    font = max(6.0, min(11.0, 2.6 * cell_inches))
    colour = {host: _colour(host_rank.get(host, 0)) for host in per_host}
    _draw_hosts(ax, scene, colour, font, Counter(place.host for place in embedding.placement.values()))
    vhosts = _draw_vhosts(ax, scene, vhost_of, font)
    _draw_edges(ax, scene, graph)
    _draw_vertices(ax, scene, graph, nodes, colour, font, cell_inches)

    total = len(embedding.placement)
    drawn = sum(1 for v in scene.pos if not v.startswith(HUB))
    notes = []
    if len(per_host) < len(tree):
        notes.append(f"{len(per_host)} of {len(tree)} hosts: the busiest and those it trades most with")
    if drawn < total:
        notes.append(f"sample of {drawn} of {total} nodes")
    if scene.fast_hosts:
        notes.append(f"spiral layout on {scene.fast_hosts} host{'s' if scene.fast_hosts > 1 else ''} over "
                     f"{SPRING_MAX} vertices")
    m = embedding.metrics
    title = (f"{exp.name}: {total} nodes on {len(tree)} hosts — inter-host "
             f"{human_rate(m.inter_host_bandwidth_bps)}, {m.cut_segments} cut segments")
    ax.set_title(title + ("\n(" + "; ".join(notes) + ")" if notes else ""), fontsize=max(9.0, font * 1.1))
    present = {n.kind for n in nodes.values()}
    legend = [Line2D([], [], marker=registry.get(kind).marker, linestyle="", color="0.5", label=kind)
              for kind in registry.names() if kind in present]
    if any(v.startswith(HUB) for v in scene.pos):
        legend.append(Line2D([], [], marker="s", linestyle="", color="0.25", label="LAN"))
    legend.append(Line2D([], [], color="red", linestyle="--", label="crosses hosts"))
    if vhosts:
        legend.append(Line2D([], [], color="0.35", linestyle="--", linewidth=0.7, label="vhost VM"))
    ax.legend(handles=legend, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=len(legend), frameon=False,
              fontsize=max(7.0, font * 0.8))
    fig.savefig(str(path), format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return Drawing(str(path), drawn, total, len(per_host), scene.fast_hosts)
