"""A first placement from METIS (multilevel k-way partitioning), before any constraint other than balance.

METIS sees one vertex per free group, weighted by its containers, and:
- one *anchor* vertex per host holding everything pinned there (pinned groups share a host, so contracting them
  is exact); parts are then matched to hosts so that each anchor lands on its own host;
- one zero-weight *hub* vertex per LAN over ≥3 groups, joined to each member group by the LAN's bandwidth (the
  usual star expansion: a LAN spread over k hosts costs at least (k−1)·bandwidth in METIS's eyes, as in ours);
- target part weights = each host's fair share (so heterogeneous hosts get proportionate parts).
Tiny inputs (fewer free groups than hosts, where METIS refuses to run) take a greedy BFS fill instead.
"""
from __future__ import annotations

import numpy as np
import pymetis

from nestbed.embed.demands import BALANCE_TOLERANCE
from nestbed.embed.graph import Graph, bfs_order
from nestbed.embed.problem import Problem

MAX_METIS_WEIGHT = 100_000       # edge weights are scaled into 1 … this (METIS wants small positive integers)
# METIS may stray from the shares as far as refinement may (‰): least traffic comes before balance, and repair
# still brings every host within its capacity.
METIS_UFACTOR = round(1000 * BALANCE_TOLERANCE)


def initial_placement(problem: Problem, graph: Graph, share: dict[int, float], fixed: dict[int, int],
                      seed: int) -> list[int]:
    """Host of every group: `fixed` (pinned and physical groups) as given, the free ones from the partitioner."""
    host_of = [-1] * problem.group_count
    for g, h in fixed.items():
        host_of[g] = h
    free = [g for g in range(problem.group_count) if g not in fixed]
    parts = [h for h, s in share.items() if s > 0]
    if not free:
        return host_of
    if len(parts) == 1:
        for g in free:
            host_of[g] = parts[0]
        return host_of
    if len(free) >= 2 * len(parts):
        try:
            return _metis(problem, graph, share, parts, list(host_of), free, fixed, seed)
        except RuntimeError:      # METIS rejected the input (it says no more than that): fall back, still valid
            pass
    return _greedy(problem, graph, share, host_of, free)


def _metis(problem: Problem, graph: Graph, share: dict[int, float], parts: list[int], host_of: list[int],
           free: list[int], fixed: dict[int, int], seed: int) -> list[int]:
    groups = problem.group_count
    vertex = np.full(groups, -1, dtype=np.int64)
    vertex[free] = np.arange(len(free))
    anchor_hosts = sorted({h for g, h in fixed.items() if not problem.physical[g]})
    anchor_of = {h: len(free) + i for i, h in enumerate(anchor_hosts)}
    for g, h in fixed.items():
        if not problem.physical[g]:
            vertex[g] = anchor_of[h]
    hubs = len(free) + len(anchor_hosts)
    n = hubs + len(graph.net_weight)

    xadj = np.asarray(graph.xadj, dtype=np.int64)
    src = vertex[np.repeat(np.arange(groups), np.diff(xadj))]
    dst = vertex[np.asarray(graph.adj, dtype=np.int64)]
    w = np.asarray(graph.adjw, dtype=np.int64)
    if graph.net_weight:       # hub edges, both directions
        sizes = [len(members) for members in graph.net_groups]
        hs = np.repeat(np.arange(hubs, hubs + len(sizes), dtype=np.int64), sizes)
        hd = vertex[np.asarray([g for members in graph.net_groups for g, _ in members], dtype=np.int64)]
        hw = np.repeat(np.asarray(graph.net_weight, dtype=np.int64), sizes)
        keep = hd >= 0
        hs, hd, hw = hs[keep], hd[keep], hw[keep]
        src, dst, w = np.concatenate([src, hs, hd]), np.concatenate([dst, hd, hs]), np.concatenate([w, hw, hw])
    keep = (src >= 0) & (dst >= 0) & (src != dst)
    src, dst, w = src[keep], dst[keep], w[keep]
    keys, inverse = np.unique(src * n + dst, return_inverse=True)      # merge edges that contraction made parallel
    w = np.bincount(inverse, weights=w)
    src, dst = keys // n, keys % n
    scale = max(1.0, float(w.max()) / MAX_METIS_WEIGHT) if len(w) else 1.0
    weights = np.maximum(1, np.rint(w / scale)).astype(np.int64)
    offsets = np.searchsorted(src, np.arange(n + 1))

    vweights = np.zeros(n, dtype=np.int64)
    containers = np.asarray([d.containers for d in problem.demand], dtype=np.int64)
    np.add.at(vweights, vertex[vertex >= 0], containers[vertex >= 0])
    total = sum(share[h] for h in parts)
    tpwgts = [share[h] / total for h in parts]
    options = pymetis.Options(seed=seed, ufactor=METIS_UFACTOR, ncuts=_tries(n))
    result = pymetis.part_graph(len(parts), pymetis.CSRAdjacency(offsets, dst), vweights=vweights,
                                eweights=weights, tpwgts=tpwgts, options=options)
    part = np.asarray(result.vertex_part, dtype=np.int64)
    host_of_part = _match_parts(parts, share, {h: int(part[anchor_of[h]]) for h in anchor_hosts},
                                {h: int(vweights[anchor_of[h]]) for h in anchor_hosts})
    mapped = np.asarray(host_of_part, dtype=np.int64)[part[: len(free)]]
    for g, h in zip(free, mapped.tolist()):
        host_of[g] = h
    return host_of


def _tries(vertices: int) -> int:
    """Independent METIS runs, best kept: one run's cut varies by several times between seeds on sparse graphs,
    and small graphs partition in milliseconds."""
    return 8 if vertices <= 20_000 else 2


def _match_parts(parts: list[int], share: dict[int, float], anchor_part: dict[int, int],
                 anchor_weight: dict[int, int]) -> list[int]:
    """Part index → host. Part i was sized for host parts[i]; it may go to any host of the same share, and a
    host with pinned nodes takes the part where METIS put them (heaviest anchors first)."""
    result = [-1] * len(parts)
    used: set[int] = set()

    def same_size(i: int, h: int) -> bool:
        return abs(share[parts[i]] - share[h]) <= 1e-9 * max(1.0, share[h])

    for h in sorted(anchor_part, key=lambda h: (-anchor_weight[h], h)):
        i = anchor_part[h]
        if h in share and result[i] == -1 and same_size(i, h):
            result[i] = h
            used.add(h)
    free_hosts = [h for h in parts if h not in used]
    for i in range(len(parts)):
        if result[i] == -1:
            h = next((h for h in free_hosts if same_size(i, h)), free_hosts[0])
            free_hosts.remove(h)
            result[i] = h
    return result


def _greedy(problem: Problem, graph: Graph, share: dict[int, float], host_of: list[int],
            free: list[int]) -> list[int]:
    """Fill hosts one after another with free groups in BFS order, so neighbours tend to share a host."""
    order = bfs_order(graph, free)
    hosts = [h for h, s in share.items() if s > 0]
    load = {h: 0 for h in hosts}
    for g, h in enumerate(host_of):
        if h in load:
            load[h] += problem.demand[g].containers
    i = 0
    for g in order:
        while i < len(hosts) - 1 and load[hosts[i]] + problem.demand[g].containers > share[hosts[i]] + 0.5:
            i += 1
        host_of[g] = hosts[i]
        load[hosts[i]] += problem.demand[g].containers
    return host_of
