"""Generated vtopos for the embedding benchmark: random geometric graphs (average degree ~4) with per-link
bandwidths, written as nestbed topology files, and matching cluster files (capacity ~1.1 × nodes/hosts)."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

BANDWIDTHS = ("10Mbit", "100Mbit", "1Gbit")
BANDWIDTH_WEIGHTS = (0.3, 0.5, 0.2)


def geometric_edges(nodes: int, degree: float, seed: int) -> np.ndarray:
    """Edges (i, j), i < j, of a random geometric graph in the unit square with the given average degree.

    Grid bucketing makes it O(n): networkx's version needs scipy for that, which nestbed does not depend on."""
    rng = np.random.default_rng(seed)
    points = rng.random((nodes, 2))
    radius = math.sqrt(degree / (math.pi * nodes))
    cells = max(1, int(1 / radius))
    cell = np.minimum((points * cells).astype(np.int64), cells - 1)
    key = cell[:, 0] * cells + cell[:, 1]
    order = np.argsort(key, kind="stable")
    starts = np.searchsorted(key[order], np.arange(cells * cells + 1))
    pairs = []
    for dx in (-1, 0, 1):
        for dy in (-1, 0, 1):
            for cx in range(cells):
                nx_ = cx + dx
                if not 0 <= nx_ < cells:
                    continue
                for cy in range(cells):
                    ny_ = cy + dy
                    if not 0 <= ny_ < cells:
                        continue
                    a = order[starts[cx * cells + cy]:starts[cx * cells + cy + 1]]
                    b = order[starts[nx_ * cells + ny_]:starts[nx_ * cells + ny_ + 1]]
                    if len(a) == 0 or len(b) == 0:
                        continue
                    ia, ib = np.meshgrid(a, b, indexing="ij")
                    ia, ib = ia.ravel(), ib.ravel()
                    keep = ia < ib
                    ia, ib = ia[keep], ib[keep]
                    close = ((points[ia] - points[ib]) ** 2).sum(axis=1) <= radius * radius
                    pairs.append(np.stack([ia[close], ib[close]], axis=1))
    return np.concatenate(pairs) if pairs else np.empty((0, 2), dtype=np.int64)


def write_topology(path: Path, nodes: int, degree: float = 4.0, seed: int = 1) -> int:
    """Write the topology; returns the number of links."""
    edges = geometric_edges(nodes, degree, seed)
    rng = np.random.default_rng(seed + 1)
    bandwidth = rng.choice(len(BANDWIDTHS), size=len(edges), p=BANDWIDTH_WEIGHTS)
    lines = [f"name: embed{nodes}", "routing: none", "nodes:"]
    lines += [f"  n{i}: {{}}" for i in range(nodes)]
    lines.append("links:")
    lines += [f"  - {{ends: [n{a}, n{b}], bandwidth: {BANDWIDTHS[w]}}}" for (a, b), w in zip(edges.tolist(),
                                                                                            bandwidth.tolist())]
    path.write_text("\n".join(lines) + "\n")
    return len(edges)


def write_cluster(path: Path, nodes: int, hosts: int, slack: float = 1.1) -> int:
    """Write a cluster of `hosts` hosts each taking ceil(slack × nodes/hosts) containers; returns that capacity."""
    capacity = math.ceil(slack * nodes / hosts)
    lines = ["hosts:"] + [f"  h{i}: {{max_containers: {capacity}}}" for i in range(hosts)]
    path.write_text("\n".join(lines) + "\n")
    return capacity
