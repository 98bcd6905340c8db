"""Greedy k-way refinement on the true objective, never breaking a constraint.

METIS optimises its star-expanded graph with its own balance; this pass works on what we actually report
(connectivity−1 over links and LANs) and on our hard constraints. Boundary groups are visited in a seeded order;
each moves to the host that lowers inter-host bandwidth most, if that host can take it and stays within its
balance bound. A move that gains nothing is taken only if it evens the load. Only groups next to a moved one are
visited again, so a pass costs about the size of the boundary.
"""
from __future__ import annotations

import random
import time

from nestbed.embed.state import Assignment

MAX_PASSES = 12
BIG_NET = 64          # neighbours of a move inside a bigger LAN are not revisited (they barely change)


def refine(state: Assignment, bound: dict[int, int], share: dict[int, float], seed: int,
           deadline: float | None = None) -> int:
    """Improve the placement in place; returns the number of moves."""
    graph, host_of, fixed = state.graph, state.host_of, state.fixed
    containers, g_containers = state.containers, state.g_containers
    limit = [bound.get(h, 0) for h in range(len(state.closed))]
    inverse_share = [1.0 / share[h] if share.get(h, 0) > 0 else float("inf") for h in range(len(state.closed))]
    rng = random.Random(seed)
    active = _boundary(state)
    moves = 0
    for _ in range(MAX_PASSES):
        if not active or (deadline is not None and time.perf_counter() > deadline):
            break
        order = sorted(active)
        rng.shuffle(order)
        touched: set[int] = set()
        for g in order:
            if fixed[g]:
                continue
            a = host_of[g]
            base, conn = state.gains(g)
            if not conn:
                continue
            weight = g_containers[g]
            here = containers[a] * inverse_share[a]
            best, best_gain, best_load = -1, 0, here
            for b, c in conn.items():
                gain = base + c
                if gain < best_gain:
                    continue
                load = (containers[b] + weight) * inverse_share[b]
                # Strictly better cut, or the same cut with a more even load.
                if (gain > best_gain or load < best_load) and containers[b] + weight <= limit[b] \
                        and state.fits(b, g):
                    best, best_gain, best_load = b, gain, load
            if best < 0:
                continue
            state.move(g, best)
            moves += 1
            touched.update(graph.adj[graph.xadj[g]:graph.xadj[g + 1]])
            for net, _count in graph.nets_of[g]:
                members = graph.net_groups[net]
                if len(members) <= BIG_NET:
                    touched.update(m for m, _ in members)
        active = touched
    return moves


def _boundary(state: Assignment) -> set[int]:
    """Free groups with a neighbour on another host or in a LAN that spans hosts."""
    graph, host_of, fixed = state.graph, state.host_of, state.fixed
    xadj, adj = graph.xadj, graph.adj
    boundary: set[int] = set()
    for g in range(len(host_of)):
        if fixed[g]:
            continue
        h = host_of[g]
        for j in range(xadj[g], xadj[g + 1]):
            if host_of[adj[j]] != h:
                boundary.add(g)
                break
    for net, phi in enumerate(state.phi):
        if len(phi) > 1:
            boundary.update(g for g, _ in graph.net_groups[net] if not fixed[g])
    return boundary
