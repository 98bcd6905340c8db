"""The traffic graph over groups: what a placement costs.

The true objective is the connectivity−1 metric: a segment of bandwidth w touching k hosts costs w·(k−1). A link,
or a LAN whose members fall in two groups, is a weighted edge (cost w when cut). A LAN over three or more groups is
a *net* whose cost depends on how many hosts it touches, so it is kept as a hyperedge with its member groups.
Parallel edges between the same two groups are merged, and segments inside one group cost nothing.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from nestbed.embed.demands import DEFAULT_BANDWIDTH
from nestbed.embed.problem import Problem
from nestbed.model.topology import Experiment, Node


@dataclass
class Segments:
    """Every link and LAN with its member nodes (indices), for reporting the cut."""
    names: list[str]
    members: list[list[int]]
    bandwidth: list[int]


@dataclass
class Graph:
    xadj: list[int]                       # CSR over groups: neighbours of g are adj[xadj[g]:xadj[g+1]]
    adj: list[int]
    adjw: list[int]                       # bit/s, summed over parallel segments
    net_weight: list[int]                 # LANs over ≥3 groups: bandwidth …
    net_groups: list[list[tuple[int, int]]]   # … and (group, members in it)
    nets_of: list[list[tuple[int, int]]]  # group → (net, members of the group in it)

    @property
    def edge_count(self) -> int:
        return len(self.adj) // 2


def collect_segments(exp: Experiment, nodes: dict[str, Node], problem: Problem) -> Segments:
    index = {name: i for i, name in enumerate(problem.node_names)}
    names, members, bandwidth = [], [], []
    for segment in exp.segments.values():
        try:     # fast path: every end names a concrete node (no groups to expand)
            if segment.kind == "link":
                a, b = segment.endpoints
                ids = [index[a.node], index[b.node]]
            else:
                ids = [index[end.node] for end in segment.endpoints]
        except KeyError:
            ids = [index[end.node] for end in exp.segment_members(segment, nodes)]
        names.append(segment.name)
        members.append(ids)
        bandwidth.append(segment.shaping.bandwidth or DEFAULT_BANDWIDTH)
    return Segments(names, members, bandwidth)


def build_graph(problem: Problem, segments: Segments) -> Graph:
    group_of = problem.group_of
    groups = problem.group_count
    eu: list[int] = []
    ev: list[int] = []
    ew: list[int] = []
    net_weight: list[int] = []
    net_groups: list[list[tuple[int, int]]] = []
    nets_of: list[list[tuple[int, int]]] = [[] for _ in range(groups)]
    for ids, bw in zip(segments.members, segments.bandwidth):
        if len(ids) == 2:
            a, b = group_of[ids[0]], group_of[ids[1]]
            if a != b:
                eu.append(a)
                ev.append(b)
                ew.append(bw)
            continue
        counts: dict[int, int] = {}
        for i in ids:
            g = group_of[i]
            counts[g] = counts.get(g, 0) + 1
        if len(counts) == 2:
            a, b = counts
            eu.append(a)
            ev.append(b)
            ew.append(bw)
        elif len(counts) > 2:
            net = len(net_weight)
            net_weight.append(bw)
            net_groups.append(list(counts.items()))
            for g, count in counts.items():
                nets_of[g].append((net, count))
    xadj, adj, adjw = _csr(groups, eu, ev, ew)
    return Graph(xadj, adj, adjw, net_weight, net_groups, nets_of)


def _csr(n: int, eu: list[int], ev: list[int], ew: list[int]) -> tuple[list[int], list[int], list[int]]:
    """Symmetric CSR with parallel edges merged (numpy: the Python loop would dominate on 10⁵ edges)."""
    if not eu:
        return [0] * (n + 1), [], []
    u = np.asarray(eu, dtype=np.int64)
    v = np.asarray(ev, dtype=np.int64)
    w = np.asarray(ew, dtype=np.int64)
    lo, hi = np.minimum(u, v), np.maximum(u, v)
    keys, inverse = np.unique(lo * n + hi, return_inverse=True)
    weights = np.bincount(inverse, weights=w).astype(np.int64)
    lo, hi = keys // n, keys % n
    src = np.concatenate([lo, hi])
    dst = np.concatenate([hi, lo])
    wt = np.concatenate([weights, weights])
    order = np.lexsort((dst, src))
    src, dst, wt = src[order], dst[order], wt[order]
    xadj = np.searchsorted(src, np.arange(n + 1))
    return xadj.tolist(), dst.tolist(), wt.tolist()


def bfs_order(graph: Graph, groups: list[int]) -> list[int]:
    """`groups` in breadth-first order over edges and LANs, restricted to `groups`: neighbours end up close."""
    wanted = set(groups)
    seen: set[int] = set()
    seen_nets: set[int] = set()       # a LAN's members are queued once, not once per member (big LANs)
    order: list[int] = []
    for start in groups:
        if start in seen:
            continue
        seen.add(start)
        queue = deque([start])
        while queue:
            g = queue.popleft()
            order.append(g)
            neighbours = graph.adj[graph.xadj[g]:graph.xadj[g + 1]]
            for net, _count in graph.nets_of[g]:
                if net not in seen_nets:
                    seen_nets.add(net)
                    neighbours += [m for m, _ in graph.net_groups[net]]
            for m in neighbours:
                if m in wanted and m not in seen:
                    seen.add(m)
                    queue.append(m)
    return order
