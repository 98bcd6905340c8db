"""Exact search for small embeddings (a handful of free groups on a few hosts).

Local moves get stuck on tiny inputs, where one node is a large share of a host and every improving change is a
swap; yet tiny topologies are the most common. So when the free groups are few, a depth-first branch and bound
tries every placement that meets the constraints and the balance bounds, starting from the heuristic's cost
as the bound to beat, placing groups in BFS order (neighbours early, so costs show early) and trying only one of
several interchangeable empty hosts. A step budget keeps it bounded; if it runs out, the best placement found so
far stands.
"""
from __future__ import annotations

from nestbed.embed.graph import bfs_order
from nestbed.embed.state import Assignment

MAX_FREE_GROUPS = 14
MAX_STEPS = 200_000


def worth_trying(free: int, hosts: int) -> bool:
    return 0 < free <= MAX_FREE_GROUPS and hosts ** free <= 50_000_000 and hosts > 1


def improve_exactly(state: Assignment, open_hosts: list[int], bound: dict[int, int] | None) -> bool:
    """Replace state's placement of free groups by the best one if it beats the current; True if it did.

    With `bound` None only the hard constraints count, and any valid placement beats the current one: that is how
    a failed repair of a small input gets a second chance."""
    free = [g for g in range(len(state.host_of)) if not state.fixed[g]]
    incumbent = state.objective() if bound is not None else float("inf")
    if incumbent == 0:
        return False
    best_hosts: list[int] | None = None
    start = list(state.host_of)
    order = bfs_order(state.graph, free)
    for g in free:
        state.unplace(g)
    base = state.objective()          # what the fixed groups cost among themselves
    steps = 0
    limit = [bound.get(h, 0) if bound is not None else state.cap_containers[h] for h in range(len(state.closed))]
    # Hosts alike in every respect and still empty are interchangeable: trying one of them is enough.
    signature = {h: (state.cap_containers[h], state.cap_vms[h], state.cap_cpus[h], state.cap_memory[h],
                     limit[h], state.pinned_vhosts[h]) for h in open_hosts}
    best = incumbent

    def search(depth: int, cost: int) -> None:
        nonlocal best, best_hosts, steps
        if cost >= best or steps > MAX_STEPS:
            return
        if depth == len(order):
            best, best_hosts = cost, list(state.host_of)
            return
        g = order[depth]
        tried_empty: set[tuple[object, ...]] = set()
        for h in open_hosts:
            empty = state.containers[h] == 0 and state.qemu[h] == 0 and state.processes[h] == 0
            if empty:
                if signature[h] in tried_empty:
                    continue
                tried_empty.add(signature[h])
            if state.containers[h] + state.g_containers[g] > limit[h] or not state.fits(h, g):
                continue
            steps += 1
            added = state.place(g, h)
            search(depth + 1, cost + added)
            state.unplace(g)

    search(0, base)
    final = best_hosts if best_hosts is not None else start
    for g in order:
        state.place(g, final[g])
    return best_hosts is not None
