"""Pack each host's processes into vhost VMs (embed.processes_in: qemu).

A host gets the fewest vhosts that hold its processes (at most per_vhost each), plus any vhost a pin names.
Processes are taken in BFS order of the traffic graph, so neighbours tend to share a VM, and spread evenly
over the new vhosts (11 processes with per_vhost 10 make VMs of 6 and 5, not 10 and 1).
"""
from __future__ import annotations

from nestbed.embed.demands import vhosts_needed
from nestbed.embed.graph import Graph, bfs_order
from nestbed.embed.problem import Problem, vhost_name
from nestbed.kinds import registry


def pack_vhosts(problem: Problem, graph: Graph | None, host_of: list[int]) -> tuple[dict[int, str], dict[str, str]]:
    """(node → vhost, vhost → host) for every node whose kind runs in a vhost; empty unless processes nest."""
    if not problem.nested:
        return {}, {}
    per_vhost = problem.settings.per_vhost
    groups_on: dict[int, list[int]] = {}
    for g, h in enumerate(host_of):
        groups_on.setdefault(h, []).append(g)
    node_vhost: dict[int, str] = {}
    vhosts: dict[str, str] = {}
    for h in sorted(groups_on):
        host = problem.host_names[h]
        order = bfs_order(graph, groups_on[h]) if graph is not None else groups_on[h]
        free: list[int] = []
        pinned: dict[int, list[int]] = {index: [] for index in sorted(problem.pinned_vhosts[h])}
        for g in order:
            for i in problem.group_nodes[g]:
                if not registry.get(problem.nodes[i].kind).runs_in_vhost:
                    continue
                if i in problem.vhost_pin:
                    pinned[problem.vhost_pin[i]].append(i)
                else:
                    free.append(i)
        count = vhosts_needed(len(free) + sum(map(len, pinned.values())), len(pinned), per_vhost)
        new = [k for k in _free_indices(set(pinned), count - len(pinned))]
        into_new = min(len(free), len(new) * per_vhost)
        buckets: list[tuple[int, int]] = []          # (vhost index, how many free processes it takes)
        for rank, k in enumerate(new):                # even sizes over the new vhosts
            buckets.append((k, into_new // len(new) + (1 if rank < into_new % len(new) else 0)))
        for k, members in pinned.items():            # what is left fills the pinned vhosts' spare room
            buckets.append((k, per_vhost - len(members)))
        start = 0
        used: list[int] = []
        for k, size in buckets:
            members = pinned.get(k, []) + free[start:start + size]
            start += size
            if members:
                used.append(k)
                for i in members:
                    node_vhost[i] = vhost_name(host, k)
        assert start >= len(free), "vhost packing lost processes"
        for k in sorted(used):
            vhosts[vhost_name(host, k)] = host
    return node_vhost, vhosts


def _free_indices(taken: set[int], count: int) -> list[int]:
    indices: list[int] = []
    k = 0
    while len(indices) < count:
        if k not in taken:
            indices.append(k)
        k += 1
    return indices
