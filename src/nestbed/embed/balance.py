"""Balanced load: each open host's fair share of the containers, and how far a placement strays from it.

A host's share is an even split, capped by what the host can hold in containers — counted in containers, or in
the VMs, cpus or memory the average container needs, whichever is tightest (water filling over those caps).
"""
from __future__ import annotations

import math

from nestbed.embed.demands import (
    BALANCE_TOLERANCE,
    VHOST_CPUS,
    VHOST_MEMORY,
    fair_shares,
)
from nestbed.embed.problem import Problem


def container_room(problem: Problem, hosts: list[int]) -> dict[int, float]:
    """How many average containers of this experiment each host can hold, by its tightest capacity."""
    total = problem.free_total()
    n = total.containers
    if n == 0:
        return {h: problem.caps[h].containers for h in hosts}
    vhosts = -(-total.processes // problem.settings.per_vhost) if problem.nested else 0
    per_container = ((total.qemu + vhosts) / n, (total.cpus + vhosts * VHOST_CPUS) / n,
                     (total.memory + vhosts * VHOST_MEMORY) / n)
    room = {}
    for h in hosts:
        cap = problem.caps[h]
        limits = [cap.containers]
        for need, have in zip(per_container, (cap.vms, cap.cpus, cap.memory)):
            if need > 0 and have != math.inf:
                limits.append(have / need)
        room[h] = min(limits)
    return room


def shares(problem: Problem, open_hosts: list[int]) -> dict[int, float]:
    n = problem.free_total().containers
    if n == 0 or not open_hosts:
        return {h: 0.0 for h in open_hosts}
    room = container_room(problem, open_hosts)
    return dict(zip(open_hosts, fair_shares(n, [room[h] for h in open_hosts])))


def bounds(problem: Problem, share: dict[int, float], worst: float = 0.0) -> dict[int, int]:
    """The most containers refinement may put on a host: its share plus the tolerance, or plus the current
    worst imbalance if the partitioner already went further (so refinement never makes the worst host worse),
    never above the cap."""
    tolerance = max(BALANCE_TOLERANCE, worst if worst != math.inf else 0.0)
    return {h: int(min(problem.caps[h].containers, max(math.floor(s * (1 + tolerance) + 1e-9),
                                                         math.ceil(s * (1 + BALANCE_TOLERANCE) - 1e-9),
                                                         math.ceil(s - 1e-9))))
            for h, s in share.items()}


def imbalance(containers: dict[int, int], share: dict[int, float]) -> float:
    """Max over hosts of load / share − 1 (0 when every host has exactly its share)."""
    worst = 0.0
    for h, s in share.items():
        load = containers.get(h, 0)
        if s > 0:
            worst = max(worst, load / s - 1)
        elif load:
            return math.inf
    return worst
